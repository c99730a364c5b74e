//! TLS for sluice's HTTP clients: the executors' (`http` steps, HTTP gate probes, standalone
//! `http` jobs) and the CLI's.
//!
//! The TLS stack is rustls with the *ring* cryptography provider, installed once as the
//! process default ([`install_crypto_provider`]) before any client is built.
//!
//! Certificates are always verified, against [`Roots`]:
//!
//! 1. the system's trust store, read once when the client is built: the platform's store,
//!    or only the PEM file named by `SSL_CERT_FILE` and the directories named by
//!    `SSL_CERT_DIR` when either variable is set;
//! 2. when that yields no usable certificate (a minimal container without a CA bundle, say),
//!    the Mozilla roots compiled into sluice instead, so public endpoints still work; the
//!    worker logs a warning saying so;
//! 3. plus the certificates of an extra PEM file, when one is given (the worker's
//!    `worker.ca_file`), for endpoints behind a private certificate authority.
//!
//! Reading the store once, here, rather than letting the HTTP library's platform verifier
//! read it, is what makes step 2 possible: that verifier refuses to build a client at all
//! when the store is empty, which would stop a worker that only runs commands.

use std::path::Path;
use std::sync::Once;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Installs the *ring* provider as the process-wide rustls default, once. A provider that
/// is already installed (by an embedding program, say) is kept.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Where the base of a set of [`Roots`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootsOrigin {
    /// The system's trust store (or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    System,
    /// The bundled Mozilla roots: the system's store gave no usable certificate. Holds what
    /// was found wrong while reading it, when anything was.
    Bundled {
        /// Problems met reading the system's store, `; `-separated (may be empty).
        problems: String,
    },
}

/// The certificate authorities a client trusts (see the module docs).
#[derive(Debug, Clone)]
pub struct Roots {
    certs: Vec<CertificateDer<'static>>,
    origin: RootsOrigin,
    extra: usize,
}

impl Roots {
    /// The system's roots (or the bundled ones), plus those of `ca_file` when given.
    ///
    /// # Errors
    /// `ca_file` cannot be read, holds something that is not a PEM certificate, or holds
    /// no certificate.
    pub fn load(ca_file: Option<&Path>) -> Result<Self, String> {
        let system = rustls_native_certs::load_native_certs();
        let problems = system
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        Self::from_parts(system.certs, &problems, ca_file)
    }

    /// As [`Roots::load`], from the certificates read from the system's store and the
    /// problems met reading it.
    fn from_parts(
        system: Vec<CertificateDer<'static>>,
        problems: &[String],
        ca_file: Option<&Path>,
    ) -> Result<Self, String> {
        let mut certs = usable(system);
        let origin = if certs.is_empty() {
            certs = usable(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
            RootsOrigin::Bundled {
                problems: problems.join("; "),
            }
        } else {
            RootsOrigin::System
        };
        let extra = match ca_file {
            Some(path) => {
                let from_file = read_ca_file(path)?;
                let n = from_file.len();
                certs.extend(from_file);
                n
            }
            None => 0,
        };
        Ok(Self {
            certs,
            origin,
            extra,
        })
    }

    /// Where the base roots came from.
    pub fn origin(&self) -> &RootsOrigin {
        &self.origin
    }

    /// How many certificates are trusted in all.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// No certificate is trusted (never the case for [`Roots::load`]).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// How many of them come from the extra CA file.
    pub fn extra(&self) -> usize {
        self.extra
    }

    /// A client builder that verifies servers against these roots and nothing else. It
    /// installs the crypto provider first (see [`install_crypto_provider`]).
    ///
    /// # Errors
    /// A certificate the HTTP library cannot take (not expected: every one was checked).
    pub fn client_builder(&self) -> Result<reqwest::ClientBuilder, String> {
        install_crypto_provider();
        let certs = self
            .certs
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot use a trusted certificate: {e}"))?;
        Ok(reqwest::Client::builder().tls_certs_only(certs))
    }
}

/// The refusal of the server's certificate, when that is why the connection of `e` failed.
pub fn refused_certificate<'e>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e rustls::Error> {
    let mut next = Some(e);
    while let Some(mut err) = next {
        next = err.source();
        // The TLS error travels inside I/O errors, whose `source` skips what they wrap.
        while let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            err = inner;
        }
        if let Some(refused @ rustls::Error::InvalidCertificate(_)) = err.downcast_ref() {
            return Some(refused);
        }
    }
    None
}

/// `refused` says no trusted authority signed the certificate (rather than, say, that it
/// expired or names another host): the case an extra trusted authority can fix.
pub fn unknown_issuer(refused: &rustls::Error) -> bool {
    matches!(
        refused,
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    )
}

/// The certificates of `certs` that can serve as trust anchors; the others are dropped (a
/// system store may hold some that do not parse).
fn usable(
    certs: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Vec<CertificateDer<'static>> {
    let mut check = RootCertStore::empty();
    certs
        .into_iter()
        .filter(|der| check.add(der.clone()).is_ok())
        .collect()
}

/// Every certificate of the PEM file at `path`.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the CA file {shown}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CA file {shown} is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "the CA file {shown} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)"
        ));
    }
    let mut check = RootCertStore::empty();
    for (i, der) in certs.iter().enumerate() {
        check.add(der.clone()).map_err(|e| {
            format!(
                "certificate {} of the CA file {shown} cannot be used: {e}",
                i + 1
            )
        })?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn system_roots() -> Vec<CertificateDer<'static>> {
        webpki_root_certs::TLS_SERVER_ROOT_CERTS[..3].to_vec()
    }

    #[test]
    fn the_system_store_is_used_when_it_has_certificates() {
        let roots = Roots::from_parts(system_roots(), &[], None).unwrap();
        assert_eq!(roots.origin(), &RootsOrigin::System);
        assert_eq!((roots.len(), roots.extra()), (3, 0));
    }

    #[test]
    fn an_empty_or_unusable_system_store_falls_back_to_the_bundled_roots() {
        let problems = ["open /etc/ssl/certs: not found".to_string()];
        let junk = vec![CertificateDer::from(b"not a certificate".to_vec())];
        let roots = Roots::from_parts(junk, &problems, None).unwrap();
        assert_eq!(
            roots.origin(),
            &RootsOrigin::Bundled {
                problems: problems[0].clone()
            }
        );
        assert_eq!(roots.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
    }

    fn pem_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn the_ca_file_adds_its_certificates() {
        let extra = ["a.test", "b.test"].map(|name| {
            rcgen::generate_simple_self_signed([name.to_string()])
                .unwrap()
                .cert
        });
        let file = pem_file(&format!("{}{}", extra[0].pem(), extra[1].pem()));
        let roots = Roots::from_parts(system_roots(), &[], Some(file.path())).unwrap();
        assert_eq!((roots.len(), roots.extra()), (5, 2));
        assert_eq!(
            &roots.certs[3..],
            [extra[0].der().clone(), extra[1].der().clone()]
        );
        assert!(roots.client_builder().unwrap().build().is_ok());
    }

    #[test]
    fn an_unusable_ca_file_is_refused_naming_it() {
        let missing = Path::new("/nonexistent/ca.pem");
        let why = Roots::from_parts(system_roots(), &[], Some(missing)).unwrap_err();
        assert!(
            why.starts_with("cannot read the CA file /nonexistent/ca.pem: "),
            "{why}"
        );
        let empty = pem_file("no certificate here\n");
        let why = Roots::from_parts(system_roots(), &[], Some(empty.path())).unwrap_err();
        assert!(why.contains("holds no certificate"), "{why}");
        // `Z2FyYmFnZQ==` is "garbage" in base64.
        let garbage =
            pem_file("-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n");
        let why = Roots::from_parts(system_roots(), &[], Some(garbage.path())).unwrap_err();
        assert!(why.starts_with("certificate 1 of the CA file"), "{why}");
    }
}
