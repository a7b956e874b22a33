//! TLS for `wss://` on both sides, through rustls.

use std::io;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};

/// The rustls this library is built with, for [`Error::Tls`]'s errors and
/// for configurations given to `from_config`.
pub use rustls;

/// Client-side TLS settings for `wss://`.
///
/// ```
/// # fn run(ca_pem: &[u8]) -> peregrine::Result<()> {
/// let connector = peregrine::tls::TlsConnector::builder().webpki_roots().ca_pem(ca_pem)?.build()?;
/// # let _ = connector; Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Trusts the Mozilla root certificates bundled in `webpki-roots`.
    pub fn webpki_roots() -> Result<Self> {
        Self::builder().webpki_roots().build()
    }

    /// Starts a connector with an empty trust store.
    pub fn builder() -> TlsConnectorBuilder {
        TlsConnectorBuilder {
            roots: RootCertStore::empty(),
            given: Vec::new(),
            client_auth: None,
            insecure: false,
        }
    }

    /// Uses a rustls configuration you built yourself.
    #[must_use]
    pub fn from_config(config: Arc<ClientConfig>) -> Self {
        Self { config }
    }

    /// Performs the TLS handshake with SNI set to `host`.
    pub async fn connect<S>(&self, host: &str, io: S) -> Result<tokio_rustls::client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| Error::Url(format!("{host} is not a valid TLS server name")))?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        connector.connect(name, io).await.map_err(tls_io_error)
    }
}

/// Builds a [`TlsConnector`].
#[must_use]
pub struct TlsConnectorBuilder {
    roots: RootCertStore,
    /// The certificates given with [`TlsConnectorBuilder::ca_pem`]: each is also
    /// accepted as the server's own certificate, byte for byte (pinned).
    given: Vec<CertificateDer<'static>>,
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    insecure: bool,
}

impl std::fmt::Debug for TlsConnectorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnectorBuilder").field("roots", &self.roots.len()).finish_non_exhaustive()
    }
}

impl TlsConnectorBuilder {
    /// Trusts the bundled Mozilla roots (`webpki-roots`).
    pub fn webpki_roots(mut self) -> Self {
        self.roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        self
    }

    /// Trusts the operating system's certificate store.
    pub fn native_roots(mut self) -> Self {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = self.roots.add(cert);
        }
        self
    }

    /// Trusts the CA certificates in a PEM file's contents: a server whose
    /// chain leads to one of them is trusted (as by curl's `--cacert`).
    ///
    /// A certificate given here is also trusted as the server's own
    /// certificate when it is exactly the one the server presents, byte for
    /// byte (pinned), whatever issued it: a self-signed certificate made by
    /// `openssl req -x509`, which is marked as a CA and which WebPKI alone
    /// refuses as a server's certificate (`CaUsedAsEndEntity`), or a leaf
    /// without its issuer. Its dates and names are still checked, and the
    /// handshake still proves that the server holds its key.
    ///
    /// Data without a single certificate is an error
    /// ([`PemError::NoCertificate`]), not a file that silently adds nothing.
    pub fn ca_pem(mut self, pem: &[u8]) -> Result<Self> {
        for cert in load_certs(pem)? {
            self.roots.add(cert.clone()).map_err(Error::Tls)?;
            self.given.push(cert);
        }
        Ok(self)
    }

    /// Presents a client certificate (chain and key, PEM).
    pub fn client_cert_pem(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        self.client_auth = Some(load_pair(cert_pem, key_pem)?);
        Ok(self)
    }

    /// Accepts any server certificate. For debugging against self-signed
    /// servers only: it removes all protection against interception.
    pub fn danger_accept_invalid_certs(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// Finishes the connector.
    pub fn build(self) -> Result<TlsConnector> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(insecure::AcceptAnyCert(provider())))
        } else if self.given.is_empty() {
            builder.with_root_certificates(self.roots)
        } else {
            let verifier = pinned::WebPkiOrPinned::new(self.roots, self.given, provider())?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
        };
        let config = match self.client_auth {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(Error::Tls)?,
            None => builder.with_no_client_auth(),
        };
        Ok(TlsConnector { config: Arc::new(config) })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server-side TLS: wraps accepted TCP connections.
///
/// ```no_run
/// # async fn run() -> peregrine::Result<()> {
/// let acceptor = peregrine::tls::TlsAcceptor::from_pem(
///     &std::fs::read("cert.pem")?,
///     &std::fs::read("key.pem")?,
/// )?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// let (tcp, _) = listener.accept().await?;
/// let tls = acceptor.accept(tcp).await?;
/// let ws = peregrine::accept(tls).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor").finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// An acceptor presenting the certificate chain and private key in PEM.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        let (certs, key) = load_pair(cert_pem, key_pem)?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(Error::Tls)?;
        Ok(Self::from_config(Arc::new(config)))
    }

    /// Uses a rustls server configuration you built yourself.
    #[must_use]
    pub fn from_config(config: Arc<ServerConfig>) -> Self {
        Self { inner: tokio_rustls::TlsAcceptor::from(config) }
    }

    /// Performs the server side of the TLS handshake.
    pub async fn accept<S>(&self, io: S) -> Result<tokio_rustls::server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.inner.accept(io).await.map_err(tls_io_error)
    }
}

/// Why a certificate or key given as PEM cannot be used.
/// [`PemError::in_certificate`] says which of the two was at fault.
///
/// ```
/// use peregrine::tls::{PemError, TlsAcceptor};
///
/// let err = TlsAcceptor::from_pem(b"not a certificate", b"").unwrap_err();
/// assert!(matches!(err, peregrine::Error::Pem(PemError::NoCertificate)));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum PemError {
    /// The certificate data has no `-----BEGIN CERTIFICATE-----` block.
    NoCertificate,
    /// A certificate block is there but does not decode.
    BadCertificate(io::Error),
    /// The key data has no unencrypted private key block (PKCS#8, PKCS#1 or
    /// SEC1).
    NoPrivateKey,
    /// The key is encrypted (`-----BEGIN ENCRYPTED PRIVATE KEY-----`).
    EncryptedPrivateKey,
    /// A key block is there but does not decode.
    BadPrivateKey(io::Error),
    /// The certificate data holds the key and the key data the certificate.
    Swapped,
}

impl PemError {
    /// Whether the certificate data (rather than the key) was at fault.
    pub fn in_certificate(&self) -> bool {
        matches!(self, Self::NoCertificate | Self::BadCertificate(_) | Self::Swapped)
    }
}

impl std::fmt::Display for PemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoCertificate => f.write_str(
                "no PEM certificate (a '-----BEGIN CERTIFICATE-----' block) found: is it the key, or DER \
                 instead of PEM?",
            ),
            Self::BadCertificate(e) => write!(f, "the PEM certificate does not decode: {e}"),
            Self::NoPrivateKey => f.write_str(
                "no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1: a '-----BEGIN PRIVATE KEY-----', \
                 '-----BEGIN RSA PRIVATE KEY-----' or '-----BEGIN EC PRIVATE KEY-----' block) found: is it \
                 the certificate, or DER instead of PEM?",
            ),
            Self::EncryptedPrivateKey => f.write_str(
                "the private key is encrypted: decrypt it first (`openssl pkey -in key.pem -out \
                 key-plain.pem`) and keep the result readable only by the server",
            ),
            Self::BadPrivateKey(e) => write!(f, "the PEM private key does not decode: {e}"),
            Self::Swapped => f.write_str(
                "it holds the private key, and the key file holds the certificate: the two are swapped",
            ),
        }
    }
}

/// Says which of the two files given to [`TlsAcceptor::from_pem`] or
/// [`TlsConnectorBuilder::client_cert_pem`] an error is about, and why, in
/// the caller's names for them (an option or a config key with the path).
/// `None` for an error that is about neither file alone.
///
/// ```
/// use peregrine::tls::{TlsAcceptor, pem_pair_problem};
///
/// let err = TlsAcceptor::from_pem(b"", b"").unwrap_err();
/// let text = pem_pair_problem(&err, "--tls-cert a.pem", "--tls-key b.pem").unwrap();
/// assert!(text.starts_with("--tls-cert a.pem: no PEM certificate"));
/// ```
pub fn pem_pair_problem(
    error: &Error,
    cert: impl std::fmt::Display,
    key: impl std::fmt::Display,
) -> Option<String> {
    match error {
        Error::Pem(e) if e.in_certificate() => Some(format!("{cert}: {e}")),
        Error::Pem(e) => Some(format!("{key}: {e}")),
        Error::Tls(rustls::Error::InconsistentKeys(_)) => {
            Some(format!("{key} is not the private key of the certificate in {cert}"))
        }
        _ => None,
    }
}

/// `Display` includes the decoding error, so `source` skips to its source.
impl std::error::Error for PemError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::BadCertificate(e) | Self::BadPrivateKey(e) => e.source(),
            _ => None,
        }
    }
}

/// A certificate chain and its key; names a swapped pair as such rather
/// than as a certificate file without a certificate.
fn load_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    match load_certs(cert_pem) {
        Err(Error::Pem(PemError::NoCertificate))
            if load_key(cert_pem).is_ok() && load_certs(key_pem).is_ok() =>
        {
            Err(Error::Pem(PemError::Swapped))
        }
        certs => Ok((certs?, load_key(key_pem)?)),
    }
}

fn load_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut &*pem)
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| Error::Pem(PemError::BadCertificate(e)))?;
    if certs.is_empty() {
        return Err(Error::Pem(PemError::NoCertificate));
    }
    Ok(certs)
}

fn load_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    match rustls_pemfile::private_key(&mut &*pem) {
        Ok(Some(key)) => Ok(key),
        Err(e) => Err(Error::Pem(PemError::BadPrivateKey(e))),
        Ok(None) if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") => {
            Err(Error::Pem(PemError::EncryptedPrivateKey))
        }
        Ok(None) => Err(Error::Pem(PemError::NoPrivateKey)),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// rustls reports TLS failures as I/O errors wrapping a `rustls::Error`.
fn tls_io_error(error: io::Error) -> Error {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => Error::Tls(tls.clone()),
        None => Error::Io(error),
    }
}

mod insecure {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// Accepts every certificate, but still checks handshake signatures so
    /// the TLS session itself is sound.
    #[derive(Debug)]
    pub(super) struct AcceptAnyCert(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

mod pinned {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::{
        WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor, verify_server_name,
    };
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::ParsedCertificate;
    use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

    use crate::error::{Error, Result};

    /// The WebPKI verifier over the given CAs (and any other roots), which
    /// also accepts a server certificate that is byte for byte one of the
    /// certificates given as CAs: the user pinned it.
    ///
    /// A pinned certificate is checked on its own, as its own trust anchor:
    /// its dates and names must be valid; that it is marked as a CA
    /// (`CaUsedAsEndEntity`), or that its issuer is unknown, does not matter.
    /// The handshake signatures are verified as always, so the server proves
    /// it holds the pinned certificate's key.
    #[derive(Debug)]
    pub(super) struct WebPkiOrPinned {
        webpki: Arc<WebPkiServerVerifier>,
        pinned: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    }

    impl WebPkiOrPinned {
        pub(super) fn new(
            roots: RootCertStore,
            pinned: Vec<CertificateDer<'static>>,
            provider: Arc<CryptoProvider>,
        ) -> Result<Self> {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| Error::Tls(rustls::Error::General(format!("certificate verifier: {e}"))))?;
            Ok(Self { webpki, pinned, provider })
        }

        /// Checks `end_entity`, known to be pinned, with itself as the only
        /// trust anchor.
        fn verify_pinned(
            &self,
            end_entity: &CertificateDer<'_>,
            server_name: &ServerName<'_>,
            now: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            let cert = ParsedCertificate::try_from(end_entity)?;
            let mut itself = RootCertStore::empty();
            itself.add(end_entity.clone().into_owned())?;
            let algorithms = self.provider.signature_verification_algorithms.all;
            match verify_server_cert_signed_by_trust_anchor(&cert, &itself, &[], now, algorithms) {
                Ok(()) => {}
                // WebPKI checks the certificate's own dates before these, and a
                // pinned certificate needs no issuer: it is trusted as it is.
                Err(e) if is_ca_used_as_end_entity(&e) => {}
                Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {}
                Err(e) => return Err(e),
            }
            verify_server_name(&cert, server_name)?;
            Ok(ServerCertVerified::assertion())
        }
    }

    fn is_ca_used_as_end_entity(error: &rustls::Error) -> bool {
        // rustls passes this WebPKI error on as an `Other`, the WebPKI error inside.
        matches!(
            error,
            rustls::Error::InvalidCertificate(CertificateError::Other(other))
                if matches!(other.0.downcast_ref::<webpki::Error>(), Some(webpki::Error::CaUsedAsEndEntity))
        )
    }

    impl ServerCertVerifier for WebPkiOrPinned {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            let error =
                match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                    Ok(verified) => return Ok(verified),
                    Err(error) => error,
                };
            if self.pinned.iter().any(|pinned| pinned.as_ref() == end_entity.as_ref()) {
                self.verify_pinned(end_entity, server_name, now)
            } else {
                Err(error)
            }
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.webpki.supported_verify_schemes()
        }
    }
}
