//! `peregrine echo` as a process, driven by `peregrine connect`: TLS,
//! the single-thread runtime, limits, subprotocols and graceful shutdown.

mod support;

use support::{EchoServer, Input, connect, run, temp_dir};

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM;
/// returns (cert path, key path).
fn self_signed(name: &str) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("generate a certificate");
    let dir = temp_dir(name);
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert.to_str().unwrap().to_owned(), key.to_str().unwrap().to_owned())
}

#[test]
fn echo_over_tls_with_a_trusted_ca() {
    let (cert, key) = self_signed("tls-ca");
    let server = EchoServer::start(&["--tls-cert", &cert, "--tls-key", &key]);
    assert!(server.url.starts_with("wss://127.0.0.1:"), "{}", server.url);
    let url = format!("wss://localhost:{}/", server.port);
    let run = connect(&[&url, "--ca", &cert], Input::Bytes(b"over tls\n"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "over tls\n");
    server.wait_for_log("closed: 1000 (NORMAL_CLOSURE)");
}

/// A self-signed certificate as `openssl req -x509 -subj /CN=localhost -addext
/// subjectAltName=DNS:localhost,IP:127.0.0.1` makes it: marked as a CA (basicConstraints
/// CA:TRUE). Returns (cert path, key path).
fn self_signed_ca_style(dir: &std::path::Path) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path.to_str().unwrap().to_owned(), key_path.to_str().unwrap().to_owned())
}

#[test]
fn echo_over_tls_with_the_servers_own_self_signed_certificate_as_ca() {
    // The first thing everyone tries: --ca with the certificate the server presents,
    // made by `openssl req -x509` (which curl --cacert accepts). It is pinned.
    let (cert, key) = self_signed_ca_style(&temp_dir("tls-pinned"));
    let server = EchoServer::start(&["--tls-cert", &cert, "--tls-key", &key]);
    let url = format!("wss://localhost:{}/", server.port);
    let run = connect(&[&url, "--ca", &cert], Input::Bytes(b"pinned\n"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "pinned\n");

    // Another certificate of the same kind is not the server's: refused, and told why.
    let (other, _) = self_signed_ca_style(&temp_dir("tls-pinned-other"));
    let run = connect(&[&url, "--ca", &other, "-m", "x"], Input::Open);
    assert!(!run.status.success(), "{run:?}");
    assert!(run.stderr.contains("not the one given with --ca"), "{}", run.stderr);
}

#[test]
fn echo_over_tls_insecure_and_untrusted() {
    let (cert, key) = self_signed("tls-insecure");
    let server = EchoServer::start(&["--tls-cert", &cert, "--tls-key", &key]);
    let run = connect(&[&server.url, "--insecure"], Input::Bytes(b"anyway\n"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "anyway\n");

    // Without --ca or --insecure the certificate is not trusted, and the
    // explanation says what to pass.
    let run = connect(&[&server.url, "-m", "x"], Input::Open);
    assert!(!run.status.success(), "{run:?}");
    assert!(run.stderr.contains("not trusted"), "{}", run.stderr);
    assert!(run.stderr.contains("--ca FILE"), "{}", run.stderr);

    // ws:// against the TLS port.
    let plain = server.url.replacen("wss://", "ws://", 1);
    let run = connect(&[&plain, "-m", "x"], Input::Open);
    assert!(!run.status.success(), "{run:?}");
    assert!(run.stderr.contains("ws:// against a TLS port? try wss://"), "{}", run.stderr);
}

#[test]
fn single_thread_server_echoes_binary() {
    let server = EchoServer::start(&["--single-thread"]);
    let run = connect(
        &[&server.url, "--input", "base64", "--binary-output", "base64"],
        Input::Bytes(b"AAECAw==\n"),
    );
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "AAECAw==\n");
}

#[test]
fn oversized_messages_are_closed_with_1009() {
    let server = EchoServer::start(&["--max-message-size", "8"]);
    let run = connect(&[&server.url], Input::Bytes(b"short\nthis one is too long\n"));
    assert!(!run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "short\n");
    assert!(run.stderr.contains("1009 (MESSAGE_TOO_BIG)"), "{}", run.stderr);
}

#[test]
fn a_message_refused_while_still_being_written_is_reported_as_1009_not_1006() {
    // 5 MB: the server closes (and resets) long before the client has written it.
    let server = EchoServer::start(&["--max-message-size", "1000"]);
    let mut line = vec![b'a'; 5_000_000];
    line.push(b'\n');
    let run = connect(&[&server.url], Input::Bytes(&line));
    assert!(!run.status.success(), "{run:?}");
    assert!(run.stderr.contains("connection closed by the server: 1009 (MESSAGE_TOO_BIG)"), "{}", run.stderr);
    assert!(run.stderr.contains("frame of 5000000 bytes exceeds the limit of 1000 bytes"), "{}", run.stderr);
    assert!(!run.stderr.contains("1006"), "{}", run.stderr);
}

#[test]
fn a_subprotocol_is_chosen_from_the_offer() {
    let server = EchoServer::start(&["-p", "chat.v2", "-p", "chat.v1"]);
    let run = connect(&[&server.url, "-p", "chat.v1", "-p", "chat.v2", "-m", "x"], Input::Open);
    assert!(run.status.success(), "{run:?}");
    assert!(run.stderr.contains("subprotocol chat.v2"), "{}", run.stderr);
}

#[cfg(unix)]
#[test]
fn interrupt_closes_open_connections_with_1001_and_exits() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let mut server = EchoServer::start(&[]);
    let url = server.url.clone();
    // A client that stays connected (stdin open) until the server leaves.
    let client = std::thread::spawn(move || connect(&[&url], Input::Open));
    server.wait_for_log(": connected");
    kill(Pid::from_raw(i32::try_from(server.pid()).unwrap()), Signal::SIGINT).unwrap();
    let status = server.wait();
    assert!(status.success(), "{status:?}");
    assert!(server.log().contains("shutting down: closing 1 open connection(s)"), "{}", server.log());
    let run = client.join().unwrap();
    assert!(run.status.success(), "going away is a clean end: {run:?}");
    assert!(run.stderr.contains("connection closed by the server: 1001 (GOING_AWAY)"), "{}", run.stderr);
}

#[test]
fn listen_and_tls_mistakes_name_the_option_and_the_fix() {
    let server = EchoServer::start(&[]);
    let busy = format!("127.0.0.1:{}", server.port);
    let (cert, key) = self_signed("tls-mixup");
    let (_, other_key) = self_signed("tls-other");
    let free = "127.0.0.1:0";
    let no_key = format!("--tls-key {cert}: no unencrypted PEM private key");
    let no_cert = format!("--tls-cert {other_key}: no PEM certificate");
    let swapped =
        format!("--tls-cert {key}: it holds the private key, and the key file holds the certificate");
    for (args, expected) in [
        (vec!["--listen", busy.as_str()], "another process listens there"),
        (vec!["--listen", "127.0.0.1"], "--listen takes HOST:PORT"),
        (vec!["--listen", free, "--tls-cert", &cert, "--tls-key", &cert], no_key.as_str()),
        (vec!["--listen", free, "--tls-cert", &other_key, "--tls-key", &other_key], no_cert.as_str()),
        (
            vec!["--listen", free, "--tls-cert", &cert, "--tls-key", &other_key],
            "is not the private key of the certificate in --tls-cert",
        ),
        (vec!["--listen", free, "--tls-cert", &key, "--tls-key", &cert], swapped.as_str()),
        (vec!["--listen", free, "--max-connections", "0"], "'--max-connections <N>'"),
    ] {
        let out = run(&[&["echo"][..], &args].concat(), Input::Open);
        assert!(!out.status.success() && out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
}
