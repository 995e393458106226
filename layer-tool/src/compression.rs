//! Layer blob compression: detected from the first bytes, never trusted from a media type.

use std::io::{BufRead, Read};

use anyhow::{Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Look at the start of `reader` without consuming it.
    pub fn detect<R: BufRead>(reader: &mut R) -> Result<Compression> {
        let head = reader.fill_buf().context("reading the start of the blob")?;
        Ok(if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        })
    }

    /// A reader of the uncompressed stream.
    pub fn decoder<'a, R: BufRead + 'a>(self, reader: R) -> Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            // Multi-member: `gzip` of concatenated files is valid and some tools write it.
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
            Compression::Zstd => Box::new(
                ruzstd::decoding::StreamingDecoder::new(reader)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .context("reading the zstd frame header")?,
            ),
        })
    }
}
