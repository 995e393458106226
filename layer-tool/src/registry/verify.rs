//! Blobs checked while they stream: hashed as they pass, never read past the size their
//! descriptor declares, and refused at the end unless both digest and size match.

use std::io::{self, Read, Write};

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

use super::error::RegistryError;
use crate::digest;

/// Copy `reader` to `writer`, reading at most `size` bytes, and check that exactly `size`
/// bytes with digest `want` came. `on_bytes` sees the length of each chunk (progress);
/// `stop` is polled between chunks (another download failed). `what` names the blob in errors.
pub fn copy_verified(
    reader: impl Read,
    mut writer: impl Write,
    want: &str,
    size: u64,
    what: &str,
    mut on_bytes: impl FnMut(u64),
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    digest::hex_part(want).with_context(|| what.to_string())?;
    let mut limited = reader.take(size);
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if stop() {
            bail!("{what}: stopped (another download failed)");
        }
        let n = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("{what}: reading after {got} of {size} bytes"))
            }
        };
        hasher.update(&buf[..n]);
        writer
            .write_all(&buf[..n])
            .with_context(|| format!("{what}: writing"))?;
        got += n as u64;
        on_bytes(n as u64);
    }
    writer.flush().with_context(|| format!("{what}: writing"))?;
    let got_digest = digest::finish(hasher);
    if got != size || got_digest != want {
        return Err(RegistryError::DigestMismatch {
            what: what.to_string(),
            want: want.to_string(),
            got: got_digest,
            want_size: size,
            got_size: got,
        }
        .into());
    }
    Ok(())
}

/// Check a small document already in memory (a manifest, an index) against a descriptor.
pub fn check_bytes(bytes: &[u8], want: &str, size: Option<u64>, what: &str) -> Result<()> {
    digest::hex_part(want).with_context(|| what.to_string())?;
    let got = digest::of_bytes(bytes);
    if got != want || size.is_some_and(|s| s != bytes.len() as u64) {
        return Err(RegistryError::DigestMismatch {
            what: what.to_string(),
            want: want.to_string(),
            got,
            want_size: size.unwrap_or(bytes.len() as u64),
            got_size: bytes.len() as u64,
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(data: &[u8], want: &str, size: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        copy_verified(data, &mut out, want, size, "blob", |_| {}, &|| false)?;
        Ok(out)
    }

    #[test]
    fn good_blob_passes() {
        let d = digest::of_bytes(b"hello");
        assert_eq!(copy(b"hello", &d, 5).unwrap(), b"hello");
    }

    #[test]
    fn never_reads_past_the_declared_size() {
        // A registry that sends more than declared: only `size` bytes are read, and they are
        // what the digest covers.
        let d = digest::of_bytes(b"hel");
        assert_eq!(copy(b"hello world", &d, 3).unwrap(), b"hel");
    }

    #[test]
    fn short_wrong_and_malformed_are_refused() {
        let d = digest::of_bytes(b"hello");
        let err = format!("{:#}", copy(b"hell", &d, 5).unwrap_err());
        assert!(
            err.contains("digest mismatch") && err.contains("4 bytes read"),
            "{err}"
        );
        let err = format!("{:#}", copy(b"jello", &d, 5).unwrap_err());
        assert!(err.contains("digest mismatch"), "{err}");
        assert!(copy(b"x", "sha256:xyz", 1).is_err());
        assert!(check_bytes(b"hello", &d, Some(4), "m").is_err());
        check_bytes(b"hello", &d, Some(5), "m").unwrap();
    }
}
