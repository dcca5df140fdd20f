//! Reads the platform a job binary was built for from its ELF header, and names this machine's.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// What the ELF header of a binary says about where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// Architecture as in a Rust target triple (`x86_64`, `aarch64`, `powerpc64le`, ...).
    pub arch: String,
    /// Operating system as in a target triple (`linux`, `freebsd`, ...).
    pub os: String,
    /// The whole triple, e.g. `x86_64-unknown-linux-gnu`.
    pub triple: String,
    /// An executable (`ET_EXEC`, or `ET_DYN` as position-independent executables are).
    pub executable: bool,
}

impl ElfInfo {
    /// Whether a binary of this platform runs on `other`'s (same architecture and system; the
    /// C library is not compared, a static binary runs on either).
    pub fn same_platform(&self, other: &ElfInfo) -> bool {
        self.arch == other.arch && self.os == other.os
    }
}

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_INTERP: u32 = 3;
const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;

/// Reads the ELF header of the file at `path`; the error says why it is not an ELF binary.
pub fn read_file(path: &Path) -> Result<ElfInfo, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    read(&mut file)
}

/// Reads the ELF header (and the program interpreter, which tells glibc from musl).
pub fn read<R: Read + Seek>(r: &mut R) -> Result<ElfInfo, String> {
    let mut h = [0u8; 64];
    let n = read_up_to(r, &mut h).map_err(|e| format!("cannot read: {e}"))?;
    if n < 4 || &h[..4] != b"\x7fELF" {
        return Err("not an ELF binary (no ELF magic)".into());
    }
    let class64 = match h[4] {
        1 => false,
        2 => true,
        c => return Err(format!("not a valid ELF binary (class {c})")),
    };
    let little = match h[5] {
        1 => true,
        2 => false,
        d => return Err(format!("not a valid ELF binary (data encoding {d})")),
    };
    if n < if class64 { 64 } else { 52 } {
        return Err("not a valid ELF binary (header cut short)".into());
    }
    let u16_at = |o: usize| {
        let b = [h[o], h[o + 1]];
        if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    let u32_of = |b: &[u8]| {
        let b = [b[0], b[1], b[2], b[3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let u64_of = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        if little {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    };
    let e_type = u16_at(16);
    let machine = u16_at(18);
    let (phoff, flags, phentsize, phnum) = if class64 {
        (u64_of(&h[32..]), u32_of(&h[48..]), u16_at(54), u16_at(56))
    } else {
        (
            u64::from(u32_of(&h[28..])),
            u32_of(&h[36..]),
            u16_at(42),
            u16_at(44),
        )
    };
    let arch = arch_name(machine, class64, little)?;
    let os = match h[7] {
        0 | 3 => "linux".to_string(),
        2 => "netbsd".to_string(),
        6 => "solaris".to_string(),
        9 => "freebsd".to_string(),
        12 => "openbsd".to_string(),
        other => format!("osabi{other}"),
    };
    let interp = interpreter(r, class64, phoff, phentsize, phnum, u32_of, u64_of);
    let mut env = if interp.as_deref().is_some_and(|i| i.contains("ld-musl")) {
        "musl".to_string()
    } else {
        "gnu".to_string()
    };
    if machine == 62 && !class64 {
        env.push_str("x32");
    }
    if arch == "arm" {
        env.push_str("eabi");
        if flags & EF_ARM_ABI_FLOAT_HARD != 0 {
            env.push_str("hf");
        }
    }
    let triple = triple(&arch, &os, &env);
    Ok(ElfInfo {
        arch,
        os,
        triple,
        executable: e_type == ET_EXEC || e_type == ET_DYN,
    })
}

/// The platform this program runs on, in the terms [`read`] uses.
pub fn host() -> ElfInfo {
    let arch = match std::env::consts::ARCH {
        "x86" => "i686",
        "powerpc64" if cfg!(target_endian = "little") => "powerpc64le",
        "aarch64" if cfg!(target_endian = "big") => "aarch64_be",
        "mips" if cfg!(target_endian = "little") => "mipsel",
        "mips64" if cfg!(target_endian = "little") => "mips64el",
        a => a,
    }
    .to_string();
    let os = std::env::consts::OS.to_string();
    let mut env = if cfg!(target_env = "musl") {
        "musl"
    } else {
        "gnu"
    }
    .to_string();
    if arch == "arm" {
        env.push_str(if cfg!(target_abi = "eabihf") {
            "eabihf"
        } else {
            "eabi"
        });
    }
    let triple = triple(&arch, &os, &env);
    ElfInfo {
        arch,
        os,
        triple,
        executable: true,
    }
}

fn triple(arch: &str, os: &str, env: &str) -> String {
    match os {
        "linux" => format!("{arch}-unknown-linux-{env}"),
        "macos" => format!("{arch}-apple-darwin"),
        other => format!("{arch}-unknown-{other}"),
    }
}

fn arch_name(machine: u16, class64: bool, little: bool) -> Result<String, String> {
    let name = match (machine, class64, little) {
        (3, false, _) => "i686",
        (62, _, _) => "x86_64",
        (183, _, true) => "aarch64",
        (183, _, false) => "aarch64_be",
        (40, false, _) => "arm",
        (243, true, _) => "riscv64",
        (243, false, _) => "riscv32",
        (21, true, true) => "powerpc64le",
        (21, true, false) => "powerpc64",
        (20, false, _) => "powerpc",
        (22, true, _) => "s390x",
        (258, true, _) => "loongarch64",
        (8, false, false) => "mips",
        (8, false, true) => "mipsel",
        (8, true, false) => "mips64",
        (8, true, true) => "mips64el",
        (2, false, _) => "sparc",
        (43, true, _) => "sparc64",
        (m, c, _) => return Ok(format!("elf{}-machine{m}", if c { 64 } else { 32 })),
    };
    Ok(name.to_string())
}

/// The `PT_INTERP` path, if the program headers can be read and have one.
fn interpreter<R: Read + Seek>(
    r: &mut R,
    class64: bool,
    phoff: u64,
    phentsize: u16,
    phnum: u16,
    u32_of: impl Fn(&[u8]) -> u32,
    u64_of: impl Fn(&[u8]) -> u64,
) -> Option<String> {
    let entsize = usize::from(phentsize);
    if phoff == 0 || phnum == 0 || entsize < if class64 { 56 } else { 32 } {
        return None;
    }
    let mut table = vec![0u8; entsize * usize::from(phnum)];
    r.seek(SeekFrom::Start(phoff)).ok()?;
    r.read_exact(&mut table).ok()?;
    let (offset, size) = table.chunks_exact(entsize).find_map(|ph| {
        (u32_of(ph) == PT_INTERP).then(|| {
            if class64 {
                (u64_of(&ph[8..]), u64_of(&ph[32..]))
            } else {
                (u64::from(u32_of(&ph[4..])), u64::from(u32_of(&ph[16..])))
            }
        })
    })?;
    if size == 0 || size > 4096 {
        return None;
    }
    let mut path = vec![0u8; size as usize];
    r.seek(SeekFrom::Start(offset)).ok()?;
    r.read_exact(&mut path).ok()?;
    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
    Some(String::from_utf8_lossy(&path[..end]).into_owned())
}

fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A minimal 64-bit little-endian ELF header.
    fn header64(machine: u16, osabi: u8, e_type: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[6] = 1;
        h[7] = osabi;
        h[16..18].copy_from_slice(&e_type.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn machine_class_and_os_abi_give_the_triple() {
        let info = read(&mut Cursor::new(header64(183, 0, ET_DYN))).unwrap();
        assert_eq!(info.triple, "aarch64-unknown-linux-gnu");
        assert!(info.executable);
        let info = read(&mut Cursor::new(header64(62, 9, ET_EXEC))).unwrap();
        assert_eq!(info.triple, "x86_64-unknown-freebsd");
        let object = read(&mut Cursor::new(header64(62, 0, 1))).unwrap();
        assert!(!object.executable, "a relocatable object is no executable");
    }

    #[test]
    fn the_interpreter_tells_musl_from_glibc() {
        let mut f = header64(62, 0, ET_DYN);
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let interp = b"/lib/ld-musl-x86_64.so.1\0";
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&PT_INTERP.to_le_bytes());
        ph[8..16].copy_from_slice(&120u64.to_le_bytes());
        ph[32..40].copy_from_slice(&(interp.len() as u64).to_le_bytes());
        f.extend(ph);
        f.extend(interp);
        let info = read(&mut Cursor::new(f)).unwrap();
        assert_eq!(info.triple, "x86_64-unknown-linux-musl");
    }

    #[test]
    fn non_elf_and_short_files_are_refused() {
        let e = read(&mut Cursor::new(b"#!/bin/sh\necho hi\n".to_vec())).unwrap_err();
        assert!(e.contains("not an ELF binary"), "{e}");
        let e = read(&mut Cursor::new(b"\x7fELF\x02\x01".to_vec())).unwrap_err();
        assert!(e.contains("cut short"), "{e}");
    }

    #[test]
    fn this_program_is_of_the_host_platform() {
        let me = read_file(&std::env::current_exe().unwrap()).unwrap();
        let host = host();
        assert!(me.same_platform(&host), "{me:?} vs {host:?}");
        assert!(me.executable);
    }
}
