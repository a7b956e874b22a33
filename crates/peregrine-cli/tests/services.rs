//! The process harness itself, over real `redis-server` processes: what the multi-node tests
//! rely on (a kill that loses the data, a restart on the same port, cutting Pub/Sub
//! connections, a three-master cluster) does what it says.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::services::{RedisCluster, RedisOptions, RedisServer, redis_command};

#[test]
fn redis_restart_comes_back_empty_on_the_same_port() {
    let Some(mut redis) = RedisServer::start("redis_restart_comes_back_empty_on_the_same_port") else {
        return;
    };
    assert_eq!(redis.command(&["SET", "k", "v"]).unwrap(), "+OK");
    let (port, pid) = (redis.port, redis.pid());
    redis.kill9();
    assert!(redis.command(&["PING"]).is_err(), "a killed server answers nothing");
    redis.restart();
    assert_eq!(redis.port, port);
    assert_ne!(redis.pid(), pid, "a new process");
    assert_eq!(redis.command(&["EXISTS", "k"]).unwrap(), ":0", "no persistence: the key is gone");
}

#[test]
fn client_kill_pubsub_cuts_only_subscribers() {
    let Some(redis) = RedisServer::start("client_kill_pubsub_cuts_only_subscribers") else { return };
    let mut subscriber = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    subscriber.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    subscriber.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n").unwrap();
    let mut reader = BufReader::new(subscriber.try_clone().unwrap());
    let mut line = String::new();
    for _ in 0..6 {
        // *3, $9, subscribe, $1, c, :1
        reader.read_line(&mut line).unwrap();
    }
    assert!(line.contains("subscribe") && line.ends_with(":1\r\n"), "{line:?}");
    assert_eq!(redis.pubsub_clients(), 1);
    // A plain connection that is open at the same time must survive.
    let mut plain = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(redis.client_kill_pubsub(), 1);
    line.clear();
    assert_eq!(reader.read_line(&mut line).unwrap_or(0), 0, "the subscriber's connection is closed");
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut pong = String::new();
    BufReader::new(plain).read_line(&mut pong).unwrap();
    assert_eq!(pong, "+PONG\r\n");
}

#[test]
fn redis_with_a_password_refuses_the_wrong_one() {
    let options = RedisOptions { password: Some("right".into()), ..Default::default() };
    let Some(redis) = RedisServer::start_with("redis_with_a_password_refuses_the_wrong_one", options) else {
        return;
    };
    assert_eq!(redis.command(&["PING"]).unwrap(), "+PONG");
    assert!(redis_command(redis.port, Some("wrong"), &["PING"]).is_err());
    assert!(redis_command(redis.port, None, &["PING"]).unwrap().starts_with("-NOAUTH"));
}

#[test]
fn a_three_master_cluster_serves_every_slot() {
    let Some(cluster) = RedisCluster::start("a_three_master_cluster_serves_every_slot") else { return };
    for node in &cluster.nodes {
        let info = node.command(&["CLUSTER", "INFO"]).unwrap();
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
    }
    // A key is served by one master and redirected by the others: a cluster, not three copies.
    let replies: Vec<String> =
        cluster.nodes.iter().map(|n| n.command(&["SET", "{chan}:k", "v"]).unwrap()).collect();
    assert_eq!(replies.iter().filter(|r| *r == "+OK").count(), 1, "{replies:?}");
    assert_eq!(replies.iter().filter(|r| r.starts_with("-MOVED")).count(), 2, "{replies:?}");
}
