//! TLS 1.3 material for the QUIC endpoint and the edge: certificate/key files or a generated self-signed
//! development certificate, its SHA-256 fingerprint, and a client verifier that pins that fingerprint.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::NetError;

/// ALPN token of the mediaproc protocol, version 1 (proto/SPEC.md §2.2).
pub const ALPN: &[u8] = b"mproq/1";

/// Where the server's certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files: a certificate chain (leaf first) and its private key.
    Files {
        /// Certificate chain file.
        cert_path: String,
        /// Private key file (PKCS#8, PKCS#1 or SEC1).
        key_path: String,
    },
    /// Development: a self-signed certificate generated at start for these DNS names / IP literals.
    SelfSigned {
        /// Subject alternative names, e.g. `["localhost", "127.0.0.1"]`.
        names: Vec<String>,
    },
}

/// Certificate chain and key, plus the leaf's fingerprint.
#[derive(Debug)]
pub struct TlsIdentity {
    /// Chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate (DER).
    pub fingerprint: [u8; 32],
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(cert: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, cert);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Colon-separated upper-case hex, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint_hex(fp: &[u8; 32]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a fingerprint in the form [`fingerprint_hex`] prints (colons optional, any case).
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

impl TlsSource {
    /// Loads or generates the identity.
    pub fn load(&self) -> Result<TlsIdentity, NetError> {
        match self {
            Self::SelfSigned { names } => {
                let ck = rcgen::generate_simple_self_signed(names.clone()).map_err(|e| {
                    NetError::Tls(format!("generating a self-signed certificate: {e}"))
                })?;
                let der = ck.cert.der().clone();
                let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
                Ok(TlsIdentity {
                    fingerprint: fingerprint(&der),
                    chain: vec![der],
                    key,
                })
            }
            Self::Files {
                cert_path,
                key_path,
            } => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
                    .map_err(|e| NetError::TlsFile {
                        path: cert_path.clone(),
                        reason: e.to_string(),
                    })?
                    .collect::<Result<_, _>>()
                    .map_err(|e| NetError::TlsFile {
                        path: cert_path.clone(),
                        reason: e.to_string(),
                    })?;
                let Some(leaf) = chain.first() else {
                    return Err(NetError::TlsFile {
                        path: cert_path.clone(),
                        reason: "no certificate found".into(),
                    });
                };
                let key =
                    PrivateKeyDer::from_pem_file(key_path).map_err(|e| NetError::TlsFile {
                        path: key_path.clone(),
                        reason: e.to_string(),
                    })?;
                Ok(TlsIdentity {
                    fingerprint: fingerprint(leaf),
                    chain,
                    key,
                })
            }
        }
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls server configuration: TLS 1.3 only, ALPN `mproq/1`, no client authentication.
pub(crate) fn server_crypto(id: TlsIdentity) -> Result<rustls::ServerConfig, NetError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(id.chain, id.key)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// How an edge authenticates the media processor.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Accept exactly the certificate with this SHA-256 fingerprint (development certificates).
    PinnedSha256([u8; 32]),
    /// Validate the chain against these roots and the server name (production certificates).
    Roots(Arc<rustls::RootCertStore>),
}

/// A verifier that accepts only the pinned leaf certificate, and still checks the handshake signatures.
#[derive(Debug)]
struct PinnedVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Constant-time comparison is not needed for a public fingerprint, but costs nothing.
        let got = fingerprint(end_entity);
        let diff = got
            .iter()
            .zip(self.pin.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// rustls client configuration for an edge.
/// A quinn client configuration that authenticates the MP as `trust` says, with ALPN `mproq/1` and the
/// given transport parameters (the edge uses it; tests use it for peers that misbehave on purpose).
pub fn quic_client_config(
    trust: &ServerTrust,
    transport: quinn::TransportConfig,
) -> Result<quinn::ClientConfig, NetError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_crypto(trust)?)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let mut cc = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
    cc.transport_config(std::sync::Arc::new(transport));
    Ok(cc)
}

pub(crate) fn client_crypto(trust: &ServerTrust) -> Result<rustls::ClientConfig, NetError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let mut cfg = match trust {
        ServerTrust::PinnedSha256(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: *pin,
                provider,
            }))
            .with_no_client_auth(),
        ServerTrust::Roots(roots) => builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}
