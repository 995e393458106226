//! sha256 digests in OCI form (`sha256:<hex>`), and readers/writers that hash what passes through.

use std::io::{self, Read, Write};

use anyhow::{bail, Result};
use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of a finished hasher.
pub fn finish(hasher: Sha256) -> String {
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// `sha256:<hex>` of a byte string.
pub fn of_bytes(bytes: &[u8]) -> String {
    finish(Sha256::new_with_prefix(bytes))
}

/// The hex part of a `sha256:<hex>` digest, checked. Other algorithms are refused.
pub fn hex_part(digest: &str) -> Result<&str> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        bail!("unsupported digest {digest:?}: only sha256 is supported");
    };
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        bail!("malformed digest {digest:?}: want sha256: and 64 lowercase hex digits");
    }
    Ok(hex)
}

/// A digest from a user: `sha256:<hex>`, or a bare 64-digit hex string.
pub fn normalize(user: &str) -> Option<String> {
    let d = if user.starts_with("sha256:") {
        user.to_string()
    } else {
        format!("sha256:{user}")
    };
    let ok = hex_part(&d).is_ok();
    ok.then_some(d)
}

/// A writer that hashes and counts everything written through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, finish(self.hasher), self.bytes)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts everything read through it, and refuses to read past a limit.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    limit: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            limit,
        }
    }

    /// Read the rest of the stream (so the digest covers all of it), then return digest and size.
    pub fn drain(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((finish(self.hasher), self.bytes))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.bytes > self.limit {
            return Err(io::Error::other(format!(
                "stream is larger than the limit of {} bytes (raise it with --max-size)",
                self.limit
            )));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_known_value() {
        assert_eq!(
            of_bytes(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut w = HashWriter::new(Vec::new());
        w.write_all(b"").unwrap();
        assert_eq!(w.finish().1, of_bytes(b""));
    }

    #[test]
    fn checks_digest_form() {
        assert!(hex_part("sha512:00").is_err());
        assert!(hex_part(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(hex_part(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert_eq!(
            normalize(&"b".repeat(64)),
            Some(format!("sha256:{}", "b".repeat(64)))
        );
        assert_eq!(normalize("x"), None);
    }

    #[test]
    fn reader_refuses_past_limit() {
        let mut r = HashReader::new(&[0u8; 100][..], 10);
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }
}
