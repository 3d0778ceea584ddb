//! TLS for every PostgreSQL connection etl makes (sources, sinks, ledger,
//! verify, status), with libpq's conventions so that a connection string
//! that works with `psql` works here:
//!
//! - `sslmode` = disable | allow | prefer (the default) | require |
//!   verify-ca | verify-full; `sslrootcert` (a PEM file, or `system` for
//!   the operating system's store), `sslcert` and `sslkey` (a client
//!   certificate); in the URL (`?sslmode=verify-full`), in a key=value
//!   string, as keys of the pipeline's `[source]` / `[[sinks]]`, or from
//!   `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, in that order.
//! - As libpq: `~/.postgresql/root.crt`, `postgresql.crt` and
//!   `postgresql.key` are used when present and not named; `require` with
//!   a root certificate checks the chain as `verify-ca` does; `verify-full`
//!   also checks the server's name against the host connected to.
//!
//! Written on rustls (through tokio-postgres-rustls) with the `ring`
//! provider: no OpenSSL to install or link, the same behaviour on every
//! machine. tokio-postgres itself knows only disable / prefer / require,
//! so the libpq keys are taken out of the connection string here and the
//! checks they ask for are made by the certificate verifier below.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(text: &str) -> Result<SslMode, String> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// The TLS keys of one endpoint, as written; unset keys fall back to the
/// environment and libpq's default files when a connection is made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsOptions {
    pub mode: Option<SslMode>,
    /// A PEM file, or `system`.
    pub root_cert: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The keys etl takes out of a connection string.
const KEYS: [&str; 5] = ["sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword"];

impl TlsOptions {
    /// Takes the TLS keys out of a URL (`?sslmode=...`) or a key=value
    /// string; returns the rest, for tokio-postgres, and the keys.
    pub fn extract(conn: &str) -> Result<(String, TlsOptions), String> {
        let conn = conn.trim();
        let mut found: Vec<(String, String)> = Vec::new();
        let rest = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
            match conn.split_once('?') {
                None => conn.to_string(),
                Some((base, query)) => {
                    let mut kept = Vec::new();
                    for pair in query.split('&').filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        if KEYS.contains(&k) {
                            found.push((k.to_string(), percent_decode(v)?));
                        } else {
                            kept.push(pair);
                        }
                    }
                    match kept.is_empty() {
                        true => base.to_string(),
                        false => format!("{base}?{}", kept.join("&")),
                    }
                }
            }
        } else {
            let mut kept = Vec::new();
            for (k, v) in key_values(conn)? {
                if KEYS.contains(&k.as_str()) {
                    found.push((k, v));
                } else {
                    kept.push(format!(
                        "{k}='{}'",
                        v.replace('\\', "\\\\").replace('\'', "\\'")
                    ));
                }
            }
            kept.join(" ")
        };
        let mut options = TlsOptions::default();
        for (k, v) in found {
            match k.as_str() {
                "sslmode" => options.mode = Some(SslMode::parse(&v)?),
                "sslrootcert" => options.root_cert = Some(v),
                "sslcert" => options.cert = Some(PathBuf::from(v)),
                "sslkey" => options.key = Some(PathBuf::from(v)),
                _ => {
                    return Err(
                        "sslpassword is not supported: etl reads unencrypted keys only; decrypt it with `openssl pkey -in KEY -out KEY.plain` and keep that file readable by you alone".into(),
                    )
                }
            }
        }
        Ok((rest.trim().to_string(), options))
    }

    /// `self`, with what it leaves unset taken from `other`.
    pub fn or(self, other: TlsOptions) -> TlsOptions {
        TlsOptions {
            mode: self.mode.or(other.mode),
            root_cert: self.root_cert.or(other.root_cert),
            cert: self.cert.or(other.cert),
            key: self.key.or(other.key),
        }
    }

    /// The keys libpq reads from the environment.
    fn from_env() -> Result<TlsOptions, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(TlsOptions {
            mode: var("PGSSLMODE")
                .map(|m| SslMode::parse(&m).map_err(|e| format!("PGSSLMODE: {e}")))
                .transpose()?,
            root_cert: var("PGSSLROOTCERT"),
            cert: var("PGSSLCERT").map(PathBuf::from),
            key: var("PGSSLKEY").map(PathBuf::from),
        })
    }

    /// The mode and, unless TLS is off, the rustls configuration for a
    /// connection now: the keys, then the environment, then libpq's files.
    pub fn resolve(&self) -> Result<(SslMode, Option<ClientConfig>), String> {
        let o = self.clone().or(TlsOptions::from_env()?);
        let mode = o.mode.unwrap_or_default();
        if mode == SslMode::Disable {
            return Ok((mode, None));
        }
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".postgresql"));
        let default_file = |name: &str| home.as_ref().map(|h| h.join(name)).filter(|p| p.is_file());
        let root = o
            .root_cert
            .clone()
            .or_else(|| default_file("root.crt").map(|p| p.display().to_string()));
        let check = match (mode, &root) {
            (SslMode::VerifyFull, Some(_)) => Check::Full,
            (SslMode::VerifyCa | SslMode::Require, Some(_)) => Check::Chain,
            (SslMode::VerifyFull | SslMode::VerifyCa, None) => {
                return Err(format!(
                    "sslmode={mode} checks the server's certificate against a CA, and none is named: set sslrootcert=FILE (the CA's PEM file), or sslrootcert=system for the system's store, or put the CA at ~/.postgresql/root.crt"
                ))
            }
            _ => Check::None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::None => Arc::new(AnyCertificate(provider.clone())),
            _ => {
                let roots = roots(root.as_deref().unwrap_or_default())?;
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("sslrootcert: {e}"))?;
                Arc::new(Checked {
                    webpki,
                    names: check == Check::Full,
                })
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let cert = o.cert.clone().or_else(|| default_file("postgresql.crt"));
        let config = match cert {
            None => builder.with_no_client_auth(),
            Some(cert) => {
                let key = o
                    .key
                    .clone()
                    .or_else(|| default_file("postgresql.key"))
                    .ok_or_else(|| {
                        format!(
                            "sslcert {} has no sslkey: name the client certificate's private key",
                            cert.display()
                        )
                    })?;
                let chain = CertificateDer::pem_file_iter(&cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("sslcert {}: {e}", cert.display()))?;
                let private = PrivateKeyDer::from_pem_file(&key).map_err(|e| {
                    format!(
                        "sslkey {}: {e} (an unencrypted PEM key is needed: PKCS#8, PKCS#1 or SEC1)",
                        key.display()
                    )
                })?;
                builder.with_client_auth_cert(chain, private).map_err(|e| {
                    format!(
                        "sslcert {} with sslkey {}: {e}",
                        cert.display(),
                        key.display()
                    )
                })?
            }
        };
        Ok((mode, Some(config)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    None,
    Chain,
    Full,
}

/// The CA certificates of `sslrootcert`: a PEM file, or `system`.
fn roots(source: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    if source == "system" {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(format!(
                "sslrootcert=system: no CA certificates found in the system's store ({:?})",
                found.errors
            ));
        }
        return Ok(store);
    }
    let path = Path::new(source);
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "sslrootcert {}: holds no CA certificate in PEM form",
            path.display()
        ));
    }
    Ok(store)
}

/// `prefer`, `require` (without a root certificate) and `allow`: the
/// connection is encrypted and any certificate is accepted, as libpq
/// accepts it; the handshake's signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (the chain to a trusted CA) and `verify-full` (and the
/// server's name): rustls's own checks, the name's skipped for verify-ca.
#[derive(Debug)]
struct Checked {
    webpki: Arc<WebPkiServerVerifier>,
    names: bool,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a name error means the
        // chain is good.
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `%XX` escapes of a URL's query value.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{text:?} has a % not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} decodes to bytes that are not UTF-8"))
}

/// libpq's `key=value key='quoted value'` connection string.
fn key_values(conn: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = conn.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("{key:?} has no value: write {key}=value"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("the value of {key} has no closing quote")),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.extend(chars.next());
                    continue;
                }
                value.push(c);
                chars.next();
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_keys_leave_a_url_and_the_rest_stays() {
        let (rest, o) = TlsOptions::extract(
            "postgresql://etl@db:5432/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fca%20dir%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://etl@db:5432/app?application_name=x");
        assert_eq!(o.mode, Some(SslMode::VerifyFull));
        assert_eq!(o.root_cert.as_deref(), Some("/ca dir/ca.pem"));
        let (rest, o) = TlsOptions::extract("postgresql://etl@db/app?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://etl@db/app");
        assert_eq!(o.mode, Some(SslMode::Require));
    }

    #[test]
    fn tls_keys_leave_a_key_value_string() {
        let (rest, o) = TlsOptions::extract(
            "host=db sslmode=verify-ca sslcert='/my certs/c.pem' password='a\\'b'",
        )
        .unwrap();
        assert_eq!(rest, "host='db' password='a\\'b'");
        assert_eq!(o.mode, Some(SslMode::VerifyCa));
        assert_eq!(o.cert, Some(PathBuf::from("/my certs/c.pem")));
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"a'b"[..]));
    }

    #[test]
    fn bad_tls_keys_say_what_to_write() {
        let e = TlsOptions::extract("postgresql://db/app?sslmode=verify").unwrap_err();
        assert!(
            e.contains("not one of disable, allow, prefer, require, verify-ca, verify-full"),
            "{e}"
        );
        let e = TlsOptions::extract("postgresql://db/app?sslpassword=x").unwrap_err();
        assert!(e.contains("sslpassword is not supported"), "{e}");
    }
}
