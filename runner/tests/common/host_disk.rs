//! A stand-in for a host disk: a loop device over a file that starts with [`SECRET`].
//! Shared by the tests of device rules (`#[path]`-included, so `common` stays as it is).
#![allow(dead_code)]

use std::fs;
use std::process::Command;

pub const SECRET: &[u8] = b"HOST-DISK-SECRET";

/// A loop device over a file that starts with [`SECRET`]; detached on drop.
pub struct HostDisk {
    pub dev: String,
    pub major: u64,
    pub minor: u64,
    _file: tempfile::NamedTempFile,
}

impl HostDisk {
    pub fn new() -> HostDisk {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut data = SECRET.to_vec();
        data.resize(1 << 20, 0);
        fs::write(file.path(), &data).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file.path())
            .output()
            .expect("losetup (util-linux)");
        assert!(out.status.success(), "{out:?}");
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
        use std::os::unix::fs::MetadataExt;
        let rdev = fs::metadata(&dev).unwrap().rdev();
        HostDisk {
            dev,
            major: nix::sys::stat::major(rdev),
            minor: nix::sys::stat::minor(rdev),
            _file: file,
        }
    }
}

impl Drop for HostDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}
