//! `wss://` end to end over loopback, with a certificate made in the test.

mod raw;

use std::net::SocketAddr;

use peregrine::proto::handshake::HandshakeError;
use peregrine::tls::{TlsAcceptor, TlsConnector};
use peregrine::{ClientBuilder, CloseCode, Error, Message};
use raw::PATIENCE;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (cert.pem(), key_pair.serialize_pem())
}

/// A wss echo server. Each connection's outcome (TLS or WebSocket handshake
/// error, or the end of the echo loop) is reported on the channel.
async fn wss_echo_server(
    cert_pem: &str,
    key_pem: &str,
) -> (SocketAddr, mpsc::UnboundedReceiver<peregrine::Result<()>>) {
    let acceptor = TlsAcceptor::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    let (listener, addr) = raw::listener().await;
    let (report, outcomes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let report = report.clone();
            tokio::spawn(async move {
                let outcome = async {
                    let tls = acceptor.accept(tcp).await?;
                    let mut ws = peregrine::accept(tls).await?;
                    while let Some(message) = ws.recv().await {
                        let message = message?;
                        if message.is_data() {
                            ws.send(message).await?;
                        }
                    }
                    Ok(())
                }
                .await;
                let _ = report.send(outcome);
            });
        }
    });
    (addr, outcomes)
}

#[tokio::test]
async fn messages_round_trip_over_wss_with_a_trusted_self_signed_certificate() {
    let (cert_pem, key_pem) = self_signed();
    let (addr, mut outcomes) = wss_echo_server(&cert_pem, &key_pem).await;
    let connector = TlsConnector::builder().ca_pem(cert_pem.as_bytes()).unwrap().build().unwrap();
    let (mut ws, response) = ClientBuilder::new(format!("wss://localhost:{}/", addr.port()))
        .tls(connector)
        .connect()
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert!(matches!(ws.get_ref(), peregrine::MaybeTlsStream::Tls(_)));

    for size in [0, 125, 126, 65536, 1 << 20] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(payload.clone())).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::binary(payload), "size {size}");
    }
    ws.send(Message::text("héllo over TLS")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("héllo over TLS"));

    // The close handshake completes over TLS too (close_notify, then EOF).
    timeout(PATIENCE, ws.close(CloseCode::NORMAL, "done")).await.expect("close returned").unwrap();
    assert!(ws.recv().await.is_none());
    let outcome = timeout(PATIENCE, outcomes.recv()).await.unwrap().unwrap();
    assert!(outcome.is_ok(), "server side: {outcome:?}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_fails_with_unknown_issuer() {
    let (cert_pem, key_pem) = self_signed();
    let (addr, mut outcomes) = wss_echo_server(&cert_pem, &key_pem).await;
    let url = format!("wss://localhost:{}/", addr.port());

    // An empty trust store, and the default one (webpki roots): neither knows
    // the certificate's issuer.
    let empty = TlsConnector::builder().build().unwrap();
    for builder in [ClientBuilder::new(url.clone()).tls(empty), ClientBuilder::new(url.clone())] {
        let result = timeout(PATIENCE, builder.connect()).await.expect("TLS failed promptly");
        match result {
            Err(Error::Tls(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))) => {}
            other => panic!("expected Tls(InvalidCertificate(UnknownIssuer)), got {:?}", other.map(|_| ())),
        }
        // The server's TLS handshake fails as well: the client sent an alert.
        let outcome = timeout(PATIENCE, outcomes.recv()).await.unwrap().unwrap();
        assert!(matches!(outcome, Err(Error::Tls(_))), "server side: {outcome:?}");
    }
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let (cert_pem, key_pem) = self_signed();
    let (addr, _outcomes) = wss_echo_server(&cert_pem, &key_pem).await;
    let connector = TlsConnector::builder().ca_pem(cert_pem.as_bytes()).unwrap().build().unwrap();
    // Trusted issuer, but the certificate names localhost, not 127.0.0.1.
    let result =
        ClientBuilder::new(format!("wss://127.0.0.1:{}/", addr.port())).tls(connector).connect().await;
    match result {
        Err(Error::Tls(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForNameContext { .. },
        ))) => {}
        Err(Error::Tls(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))) => {}
        other => panic!("expected a name mismatch, got {:?}", other.map(|_| ())),
    }
}

/// A self-signed certificate made the way `openssl req -x509 -newkey rsa:2048 -nodes
/// -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1` makes it: marked
/// as a CA (basicConstraints CA:TRUE), which WebPKI refuses as a server's own certificate.
/// Valid from `not_before` to `not_after` (years); (certificate PEM, key PEM).
fn self_signed_ca_style(names: &[&str], years: (i32, i32)) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
    params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

const VALID_NOW: (i32, i32) = (2020, 2200);

/// Connects to `url` trusting (only) the certificates in `ca_pem`, and echoes one message.
async fn connect_trusting(url: &str, ca_pem: &str) -> peregrine::Result<()> {
    let connector = TlsConnector::builder().ca_pem(ca_pem.as_bytes())?.build()?;
    let connecting = ClientBuilder::new(url).tls(connector).connect();
    let (mut ws, _) = timeout(PATIENCE, connecting).await.expect("TLS ended promptly")?;
    ws.send(Message::text("pinned")).await?;
    assert_eq!(ws.recv().await.unwrap()?, Message::text("pinned"));
    ws.close(CloseCode::NORMAL, "").await
}

/// Refused as issued by no one trusted: unknown issuer, or a trusted certificate with the
/// issuer's name but another key (two self-signed certificates with the same subject).
fn is_not_trusted(result: &peregrine::Result<()>) -> bool {
    use rustls::CertificateError::{BadSignature, UnknownIssuer};
    matches!(result, Err(Error::Tls(rustls::Error::InvalidCertificate(UnknownIssuer | BadSignature))))
}

fn is_ca_used_as_end_entity(result: &peregrine::Result<()>) -> bool {
    matches!(result, Err(Error::Tls(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(e))))
        if e.to_string().contains("CaUsedAsEndEntity"))
}

#[tokio::test]
async fn the_servers_own_ca_style_certificate_given_as_ca_is_accepted_as_pinned() {
    // What `peregrine connect --ca cert.pem` meets with a certificate made by `openssl req
    // -x509`, which curl --cacert accepts: the very certificate the server presents.
    let (cert_pem, key_pem) = self_signed_ca_style(&["localhost", "127.0.0.1"], VALID_NOW);
    let (addr, _outcomes) = wss_echo_server(&cert_pem, &key_pem).await;
    for host in ["localhost", "127.0.0.1"] {
        let result = connect_trusting(&format!("wss://{host}:{}/", addr.port()), &cert_pem).await;
        assert!(result.is_ok(), "{host}: {result:?}");
    }
    // Among other certificates in the same file, too.
    let (other, _) = self_signed_ca_style(&["localhost"], VALID_NOW);
    let bundle = format!("{other}{cert_pem}");
    let result = connect_trusting(&format!("wss://localhost:{}/", addr.port()), &bundle).await;
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_pinned_certificate_is_still_checked_for_name_and_dates() {
    let (cert_pem, key_pem) = self_signed_ca_style(&["localhost"], VALID_NOW);
    let (addr, _outcomes) = wss_echo_server(&cert_pem, &key_pem).await;
    let result = connect_trusting(&format!("wss://127.0.0.1:{}/", addr.port()), &cert_pem).await;
    assert!(
        matches!(
            result,
            Err(Error::Tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. }
                    | rustls::CertificateError::NotValidForName
            )))
        ),
        "the name still counts: {result:?}"
    );

    let (expired_pem, expired_key) = self_signed_ca_style(&["localhost"], (2001, 2002));
    let (addr, _outcomes) = wss_echo_server(&expired_pem, &expired_key).await;
    let result = connect_trusting(&format!("wss://localhost:{}/", addr.port()), &expired_pem).await;
    assert!(
        matches!(
            result,
            Err(Error::Tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ExpiredContext { .. } | rustls::CertificateError::Expired
            )))
        ),
        "the dates still count: {result:?}"
    );
}

#[tokio::test]
async fn another_self_signed_certificate_than_the_servers_is_still_refused() {
    let (cert_pem, key_pem) = self_signed_ca_style(&["localhost"], VALID_NOW);
    let (addr, _outcomes) = wss_echo_server(&cert_pem, &key_pem).await;
    let url = format!("wss://localhost:{}/", addr.port());
    // Same names, same style, another key: not the server's certificate.
    let (other_ca_style, _) = self_signed_ca_style(&["localhost"], VALID_NOW);
    let result = connect_trusting(&url, &other_ca_style).await;
    assert!(is_ca_used_as_end_entity(&result), "refused as before: {result:?}");
    let (other_leaf, _) = self_signed();
    let result = connect_trusting(&url, &other_leaf).await;
    assert!(is_ca_used_as_end_entity(&result), "refused as before: {result:?}");

    // A leaf that is not the server's, against a server presenting a leaf.
    let (leaf_pem, leaf_key) = self_signed();
    let (addr, _outcomes) = wss_echo_server(&leaf_pem, &leaf_key).await;
    let result = connect_trusting(&format!("wss://localhost:{}/", addr.port()), &other_leaf).await;
    assert!(is_not_trusted(&result), "{result:?}");
}

/// A CA and a leaf for `localhost` signed by it: (CA PEM, leaf PEM, leaf key PEM).
fn ca_and_leaf() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Peregrine test CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

#[tokio::test]
async fn a_leaf_issued_by_the_given_ca_is_trusted_as_before() {
    let (ca_pem, leaf_pem, leaf_key) = ca_and_leaf();
    let (addr, _outcomes) = wss_echo_server(&leaf_pem, &leaf_key).await;
    let url = format!("wss://localhost:{}/", addr.port());
    let result = connect_trusting(&url, &ca_pem).await;
    assert!(result.is_ok(), "{result:?}");
    let (unrelated_ca, _, _) = ca_and_leaf();
    let result = connect_trusting(&url, &unrelated_ca).await;
    assert!(is_not_trusted(&result), "{result:?}");
}

#[tokio::test]
async fn the_servers_own_leaf_given_without_its_issuer_is_accepted_as_pinned() {
    let (_, leaf_pem, leaf_key) = ca_and_leaf();
    let (addr, _outcomes) = wss_echo_server(&leaf_pem, &leaf_key).await;
    let result = connect_trusting(&format!("wss://localhost:{}/", addr.port()), &leaf_pem).await;
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn danger_accept_invalid_certs_connects_to_an_untrusted_server() {
    let (cert_pem, key_pem) = self_signed();
    let (addr, _outcomes) = wss_echo_server(&cert_pem, &key_pem).await;
    let connector = TlsConnector::builder().danger_accept_invalid_certs().build().unwrap();
    let (mut ws, _) = ClientBuilder::new(format!("wss://localhost:{}/", addr.port()))
        .tls(connector)
        .connect()
        .await
        .unwrap();
    ws.send(Message::text("anyway")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("anyway"));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn a_plain_client_against_a_tls_server_fails_the_handshake() {
    // ws:// to a wss:// port: the server's TLS layer sees HTTP, the client
    // never gets a 101.
    let (cert_pem, key_pem) = self_signed();
    let (addr, mut outcomes) = wss_echo_server(&cert_pem, &key_pem).await;
    let result = timeout(PATIENCE, peregrine::connect(&format!("ws://localhost:{}/", addr.port())))
        .await
        .expect("failed promptly");
    // The server answers with a TLS alert record, which is not HTTP.
    match result {
        Err(Error::Handshake(HandshakeError::MalformedResponse(_)) | Error::Io(_)) => {}
        other => panic!("expected a malformed response, got {:?}", other.map(|_| ())),
    }
    let outcome = timeout(PATIENCE, outcomes.recv()).await.unwrap().unwrap();
    assert!(matches!(outcome, Err(Error::Tls(_))), "server side: {outcome:?}");
}

#[test]
fn pem_that_cannot_be_used_says_which_part_and_why() {
    use peregrine::tls::PemError;
    let (cert_pem, key_pem) = self_signed();
    let (cert, key) = (cert_pem.as_bytes(), key_pem.as_bytes());
    // The two files swapped, and each file given for the other.
    let swapped = TlsAcceptor::from_pem(key, cert).unwrap_err();
    assert!(matches!(&swapped, Error::Pem(e @ PemError::Swapped) if e.in_certificate()), "{swapped}");
    assert!(matches!(TlsConnector::builder().client_cert_pem(key, cert), Err(Error::Pem(PemError::Swapped))));
    assert!(matches!(TlsAcceptor::from_pem(key, key), Err(Error::Pem(PemError::NoCertificate))));
    assert!(matches!(TlsAcceptor::from_pem(cert, cert), Err(Error::Pem(PemError::NoPrivateKey))));
    assert!(matches!(
        TlsConnector::builder().client_cert_pem(cert, cert),
        Err(Error::Pem(PemError::NoPrivateKey))
    ));
    // A CA file without a certificate would otherwise trust nothing, and the
    // mistake would show only as "unknown issuer" at the first connect.
    let empty = TlsConnector::builder().ca_pem(b"").unwrap_err();
    assert!(matches!(empty, Error::Pem(PemError::NoCertificate)), "{empty}");
    assert!(empty.to_string().contains("'-----BEGIN CERTIFICATE-----'"), "{empty}");
    // A block that is there but does not decode, in either file.
    let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    let bad_cert = TlsAcceptor::from_pem(broken.as_bytes(), key).unwrap_err();
    assert!(
        matches!(&bad_cert, Error::Pem(e @ PemError::BadCertificate(_)) if e.in_certificate()),
        "{bad_cert}"
    );
    let broken_key = "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n";
    let bad_key = TlsAcceptor::from_pem(cert, broken_key.as_bytes()).unwrap_err();
    assert!(
        matches!(&bad_key, Error::Pem(e @ PemError::BadPrivateKey(_)) if !e.in_certificate()),
        "{bad_key}"
    );
    // An encrypted key is told apart from a missing one, with the fix.
    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let e = TlsAcceptor::from_pem(cert, encrypted.as_bytes()).unwrap_err();
    assert!(matches!(e, Error::Pem(PemError::EncryptedPrivateKey)), "{e}");
    assert!(e.to_string().contains("openssl pkey"), "{e}");
    // The message is in the error's own text, not repeated by its source.
    for e in [bad_cert, bad_key, e] {
        assert!(std::error::Error::source(&e).is_none(), "{e}");
    }
    assert!(TlsAcceptor::from_pem(cert, key).is_ok());
}
