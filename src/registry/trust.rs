//! Whether a registry's TLS certificate is trusted: rustls's webpki verifier over the
//! anchors configured for the host (tls.rs gathers them), plus the one case docker (Go's
//! crypto/x509), skopeo and curl accept and webpki refuses: a server certificate that is
//! itself one of those anchors. docker's registry guide makes exactly such a certificate
//! (`openssl req -x509 …`, which OpenSSL marks CA:TRUE) and has it put in
//! `certs.d/HOST:PORT/ca.crt`; webpki calls that "CaUsedAsEndEntity". Such a certificate
//! is accepted when it is byte for byte one of the anchors, and only if its validity
//! dates cover now, it names the host, and its extended key usage (when it has one)
//! allows a server: a certificate configured as trusted for the host is trusted as
//! itself, not as an issuer of anything else.
//!
//! Reading the dates and key usage takes a few lines of DER here: webpki does not expose
//! them, and no X.509 parser is worth a dependency for two fields.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

/// Verifies as webpki does, and accepts a server certificate identical to an anchor.
#[derive(Debug)]
pub(crate) struct AnchorAwareVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The configured anchors as the certificates they came in (certs.d's and the
    /// system store's; the built-in web roots are never a server's certificate).
    anchors: Vec<CertificateDer<'static>>,
}

impl AnchorAwareVerifier {
    pub fn new(webpki: Arc<WebPkiServerVerifier>, anchors: Vec<CertificateDer<'static>>) -> AnchorAwareVerifier {
        AnchorAwareVerifier { webpki, anchors }
    }
}

impl ServerCertVerifier for AnchorAwareVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !self.anchors.iter().any(|a| a.as_ref() == end_entity.as_ref()) {
            return Err(refused);
        }
        // Trusted as itself: no chain to build, but everything else a leaf must meet.
        let facts = LeafFacts::read(end_entity).ok_or(CertificateError::BadEncoding)?;
        if now.as_secs() < facts.not_before {
            return Err(CertificateError::NotValidYetContext { time: now, not_before: unix(facts.not_before) }.into());
        }
        if now.as_secs() > facts.not_after {
            return Err(CertificateError::ExpiredContext { time: now, not_after: unix(facts.not_after) }.into());
        }
        if !facts.serves_tls {
            return Err(CertificateError::InvalidPurpose.into());
        }
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    // The handshake's signatures are checked against the certificate's key whichever
    // way the certificate was trusted: webpki's own checks do that.
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

/// For a host whose certificate is not checked (loopback, named insecure): any
/// certificate is taken, as docker does for those.
#[derive(Debug)]
pub(crate) struct Unchecked {
    pub schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

fn unix(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(secs))
}

/// What the anchor case checks that webpki's name check does not: validity (Unix
/// seconds) and whether the extended key usage allows a TLS server.
#[derive(Debug, PartialEq)]
struct LeafFacts {
    not_before: u64,
    not_after: u64,
    serves_tls: bool,
}

/// DER tags (X.690) in an X.509 certificate (RFC 5280, 4.1).
const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION: u8 = 0xa0;
const ISSUER_UID: u8 = 0x81;
const SUBJECT_UID: u8 = 0x82;
const EXTENSIONS: u8 = 0xa3;
/// id-ce-extKeyUsage (2.5.29.37), its contents.
const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
/// id-kp-serverAuth (1.3.6.1.5.5.7.3.1) and anyExtendedKeyUsage (2.5.29.37.0).
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const ANY_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25, 0x00];

impl LeafFacts {
    /// None when the certificate is not the DER it should be.
    fn read(cert: &[u8]) -> Option<LeafFacts> {
        let mut tbs = Der(Der(Der(cert).take(SEQUENCE)?).take(SEQUENCE)?);
        tbs.skip(VERSION);
        tbs.take(INTEGER)?; // serial number
        tbs.take(SEQUENCE)?; // signature algorithm
        tbs.take(SEQUENCE)?; // issuer
        let mut validity = Der(tbs.take(SEQUENCE)?);
        let not_before = validity.time()?;
        let not_after = validity.time()?;
        tbs.take(SEQUENCE)?; // subject
        tbs.take(SEQUENCE)?; // subject public key info
        tbs.skip(ISSUER_UID);
        tbs.skip(SUBJECT_UID);
        let mut serves_tls = true;
        if let Some(extensions) = tbs.skip(EXTENSIONS) {
            let mut list = Der(Der(extensions).take(SEQUENCE)?);
            while !list.0.is_empty() {
                let mut ext = Der(list.take(SEQUENCE)?);
                let id = ext.take(OID)?;
                ext.skip(BOOLEAN); // critical
                let value = ext.take(OCTET_STRING)?;
                if id == EXT_KEY_USAGE {
                    let mut usages = Der(Der(value).take(SEQUENCE)?);
                    serves_tls = false;
                    while !usages.0.is_empty() {
                        let usage = usages.take(OID)?;
                        serves_tls |= usage == SERVER_AUTH || usage == ANY_KEY_USAGE;
                    }
                }
            }
        }
        Some(LeafFacts { not_before, not_after, serves_tls })
    }
}

/// A reader of DER's tag-length-value items (definite lengths, one-byte tags: all X.509
/// needs).
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next item: its tag and contents.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        self.0 = &rest[len..];
        Some((tag, &rest[..len]))
    }

    /// The next item's contents, which must have `tag`.
    fn take(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (t, contents) if t == tag => Some(contents),
            _ => None,
        }
    }

    /// The next item's contents if it has `tag` (an optional field), else nothing read.
    fn skip(&mut self, tag: u8) -> Option<&'a [u8]> {
        if self.0.first() == Some(&tag) {
            self.take(tag)
        } else {
            None
        }
    }

    /// A UTCTime (`YYMMDDHHMMSSZ`, 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), as
    /// RFC 5280 allows them, in Unix seconds.
    fn time(&mut self) -> Option<u64> {
        let (tag, text) = self.next()?;
        let text = std::str::from_utf8(text).ok()?;
        let digits = text.strip_suffix('Z')?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (year, rest) = match (tag, digits.len()) {
            (UTC_TIME, 12) => {
                let yy: i16 = digits[..2].parse().ok()?;
                (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
            }
            (GENERALIZED_TIME, 14) => (digits[..4].parse().ok()?, &digits[4..]),
            _ => return None,
        };
        let field = |i: usize| rest[i..i + 2].parse::<i8>().ok();
        let civil = jiff::civil::DateTime::new(year, field(0)?, field(2)?, field(4)?, field(6)?, field(8)?, 0).ok()?;
        let ts = civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
        u64::try_from(ts.as_second()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER item.
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.extend([0x82, (contents.len() >> 8) as u8, contents.len() as u8]);
        }
        out.extend_from_slice(contents);
        out
    }

    fn certificate(not_before: (u8, &str), not_after: (u8, &str), eku: Option<&[&[u8]]>) -> Vec<u8> {
        let mut tbs = tlv(VERSION, &tlv(INTEGER, &[2]));
        tbs.extend(tlv(INTEGER, &[1, 2, 3]));
        tbs.extend(tlv(SEQUENCE, &tlv(OID, &[0x2a, 0x86, 0x48])));
        tbs.extend(tlv(SEQUENCE, b""));
        let mut validity = tlv(not_before.0, not_before.1.as_bytes());
        validity.extend(tlv(not_after.0, not_after.1.as_bytes()));
        tbs.extend(tlv(SEQUENCE, &validity));
        tbs.extend(tlv(SEQUENCE, b""));
        tbs.extend(tlv(SEQUENCE, &[0u8; 200]));
        if let Some(usages) = eku {
            let list: Vec<u8> = usages.iter().flat_map(|u| tlv(OID, u)).collect();
            let mut ext = tlv(OID, EXT_KEY_USAGE);
            ext.extend(tlv(OCTET_STRING, &tlv(SEQUENCE, &list)));
            let mut basic = tlv(OID, &[0x55, 0x1d, 0x13]);
            basic.extend(tlv(BOOLEAN, &[0xff]));
            basic.extend(tlv(OCTET_STRING, &tlv(SEQUENCE, &tlv(BOOLEAN, &[0xff]))));
            let mut exts = tlv(SEQUENCE, &basic);
            exts.extend(tlv(SEQUENCE, &ext));
            tbs.extend(tlv(EXTENSIONS, &tlv(SEQUENCE, &exts)));
        }
        let mut cert = tlv(SEQUENCE, &tbs);
        cert.extend(tlv(SEQUENCE, &tlv(OID, &[0x2a])));
        cert.extend(tlv(0x03, &[0, 1, 2]));
        tlv(SEQUENCE, &cert)
    }

    #[test]
    fn dates_and_key_usage_are_read_from_the_der() {
        let c = certificate((UTC_TIME, "200101000000Z"), (GENERALIZED_TIME, "20500201120000Z"), None);
        let facts = LeafFacts::read(&c).unwrap();
        assert_eq!(facts, LeafFacts { not_before: 1_577_836_800, not_after: 2_527_329_600, serves_tls: true });
        let c = certificate((UTC_TIME, "991231235959Z"), (UTC_TIME, "491231235959Z"), Some(&[SERVER_AUTH]));
        let facts = LeafFacts::read(&c).unwrap();
        assert_eq!((facts.not_before, facts.not_after), (946_684_799, 2_524_607_999));
        assert!(facts.serves_tls);
        let client_auth: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
        let c = certificate((UTC_TIME, "200101000000Z"), (UTC_TIME, "210101000000Z"), Some(&[client_auth]));
        assert!(!LeafFacts::read(&c).unwrap().serves_tls);
        let c =
            certificate((UTC_TIME, "200101000000Z"), (UTC_TIME, "210101000000Z"), Some(&[client_auth, ANY_KEY_USAGE]));
        assert!(LeafFacts::read(&c).unwrap().serves_tls);
    }

    #[test]
    fn damaged_der_is_refused_not_misread() {
        let c = certificate((UTC_TIME, "200101000000Z"), (UTC_TIME, "210101000000Z"), Some(&[SERVER_AUTH]));
        for cut in 0..c.len() {
            assert_eq!(LeafFacts::read(&c[..cut]), None, "cut at {cut}");
        }
        for bad in ["2001010000Z", "20010100000Z0", "2a0101000000Z", "201301000000Z", "200132000000Z"] {
            let c = certificate((UTC_TIME, bad), (UTC_TIME, "210101000000Z"), None);
            assert_eq!(LeafFacts::read(&c), None, "{bad}");
        }
    }
}
