//! Hadoop's token file (`Credentials`, as `HADOOP_TOKEN_FILE_LOCATION` names it): `"HDTS"`, a
//! format byte, then either the WRITABLE encoding (0, what Hadoop writes by default) or a
//! length-delimited `CredentialsProto` (1).

use std::path::Path;

use prost::Message;

use super::proto::common::{CredentialsKvProto, CredentialsProto, TokenProto};
use super::{Result, YarnError};

/// The token kind of the ApplicationMaster's token for the ResourceManager.
pub const AMRM_TOKEN_KIND: &str = "YARN_AM_RM_TOKEN";
/// The token kind the ResourceManager hands out for each NodeManager.
pub const NM_TOKEN_KIND: &str = "NMToken";
/// Where the NodeManager put the container's tokens.
pub const TOKEN_FILE_ENV: &str = "HADOOP_TOKEN_FILE_LOCATION";

const MAGIC: &[u8; 4] = b"HDTS";
const FORMAT_WRITABLE: u8 = 0;
const FORMAT_PROTOBUF: u8 = 1;

/// A Hadoop security token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub identifier: Vec<u8>,
    pub password: Vec<u8>,
    pub kind: String,
    pub service: String,
}

impl std::fmt::Debug for Token {
    // The password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("kind", &self.kind)
            .field("service", &self.service)
            .field("identifier_len", &self.identifier.len())
            .finish()
    }
}

impl From<TokenProto> for Token {
    fn from(t: TokenProto) -> Token {
        Token {
            identifier: t.identifier,
            password: t.password,
            kind: t.kind,
            service: t.service,
        }
    }
}

impl From<&Token> for TokenProto {
    fn from(t: &Token) -> TokenProto {
        TokenProto {
            identifier: t.identifier.clone(),
            password: t.password.clone(),
            kind: t.kind.clone(),
            service: t.service.clone(),
        }
    }
}

/// The tokens and secrets of a token file, by alias.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub tokens: Vec<(String, Token)>,
    pub secrets: Vec<(String, Vec<u8>)>,
}

impl Credentials {
    /// Reads the token file `path`.
    pub fn read(path: &Path) -> Result<Credentials> {
        let bytes = std::fs::read(path)
            .map_err(|e| YarnError::io(format!("reading the token file {}", path.display()), e))?;
        Credentials::parse(&bytes).map_err(|message| YarnError::Credentials {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses a token file's bytes, either format.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Credentials, String> {
        if bytes.len() < 5 || &bytes[..4] != MAGIC {
            return Err("not a Hadoop token file (no HDTS header)".into());
        }
        let body = &bytes[5..];
        match bytes[4] {
            FORMAT_WRITABLE => parse_writable(body),
            FORMAT_PROTOBUF => {
                let proto = CredentialsProto::decode_length_delimited(body)
                    .map_err(|e| format!("bad PROTOBUF credentials: {e}"))?;
                Ok(Credentials {
                    tokens: proto
                        .tokens
                        .into_iter()
                        .filter_map(|kv| Some((kv.alias, Token::from(kv.token?))))
                        .collect(),
                    secrets: proto
                        .secrets
                        .into_iter()
                        .map(|kv| (kv.alias, kv.secret.unwrap_or_default()))
                        .collect(),
                })
            }
            v => Err(format!("unknown token file format {v}")),
        }
    }

    /// The WRITABLE encoding, as Hadoop writes it by default.
    pub fn to_writable(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(FORMAT_WRITABLE);
        write_vint(&mut out, self.tokens.len() as i64);
        for (alias, t) in &self.tokens {
            write_bytes(&mut out, alias.as_bytes());
            write_bytes(&mut out, &t.identifier);
            write_bytes(&mut out, &t.password);
            write_bytes(&mut out, t.kind.as_bytes());
            write_bytes(&mut out, t.service.as_bytes());
        }
        write_vint(&mut out, self.secrets.len() as i64);
        for (alias, s) in &self.secrets {
            write_bytes(&mut out, alias.as_bytes());
            write_bytes(&mut out, s);
        }
        out
    }

    /// The PROTOBUF encoding.
    pub fn to_protobuf(&self) -> Vec<u8> {
        let proto = CredentialsProto {
            tokens: self
                .tokens
                .iter()
                .map(|(a, t)| CredentialsKvProto {
                    alias: a.clone(),
                    token: Some(t.into()),
                    secret: None,
                })
                .collect(),
            secrets: self
                .secrets
                .iter()
                .map(|(a, s)| CredentialsKvProto {
                    alias: a.clone(),
                    token: None,
                    secret: Some(s.clone()),
                })
                .collect(),
        };
        let mut out = MAGIC.to_vec();
        out.push(FORMAT_PROTOBUF);
        out.extend(proto.encode_length_delimited_to_vec());
        out
    }

    /// The first token of `kind` (YARN selects the ApplicationMaster's tokens by kind).
    pub fn token_of_kind(&self, kind: &str) -> Option<&Token> {
        self.tokens.iter().map(|(_, t)| t).find(|t| t.kind == kind)
    }
}

fn parse_writable(mut body: &[u8]) -> std::result::Result<Credentials, String> {
    let r = &mut body;
    let mut creds = Credentials::default();
    let n = read_count(r, "token count")?;
    for i in 0..n {
        let what = |f: &str| format!("token {i}: {f}");
        let alias = read_text(r, &what("alias"))?;
        let identifier = read_bytes(r, &what("identifier"))?;
        let password = read_bytes(r, &what("password"))?;
        let kind = read_text(r, &what("kind"))?;
        let service = read_text(r, &what("service"))?;
        creds.tokens.push((
            alias,
            Token {
                identifier,
                password,
                kind,
                service,
            },
        ));
    }
    let m = read_count(r, "secret count")?;
    for i in 0..m {
        let alias = read_text(r, &format!("secret {i}: alias"))?;
        let value = read_bytes(r, &format!("secret {i}: value"))?;
        creds.secrets.push((alias, value));
    }
    Ok(creds)
}

fn read_count(r: &mut &[u8], what: &str) -> std::result::Result<usize, String> {
    let n = read_vint(r).ok_or_else(|| format!("truncated at the {what}"))?;
    usize::try_from(n).map_err(|_| format!("negative {what} {n}"))
}

fn read_bytes(r: &mut &[u8], what: &str) -> std::result::Result<Vec<u8>, String> {
    let len = read_count(r, what)?;
    if r.len() < len {
        return Err(format!("truncated in the {what} ({len} bytes announced)"));
    }
    let (head, tail) = r.split_at(len);
    *r = tail;
    Ok(head.to_vec())
}

fn read_text(r: &mut &[u8], what: &str) -> std::result::Result<String, String> {
    String::from_utf8(read_bytes(r, what)?).map_err(|_| format!("the {what} is not UTF-8"))
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_vint(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Hadoop's variable-length integer (`WritableUtils.writeVLong`): one byte for -112..=127,
/// else a length/sign byte and the big-endian magnitude.
pub fn write_vint(out: &mut Vec<u8>, v: i64) {
    if (-112..=127).contains(&v) {
        out.push(v as i8 as u8);
        return;
    }
    let (mut len, mag): (i32, i64) = if v < 0 { (-120, !v) } else { (-112, v) };
    let mut tmp = mag;
    while tmp != 0 {
        tmp >>= 8;
        len -= 1;
    }
    out.push(len as i8 as u8);
    let n = if len < -120 {
        -(len + 120)
    } else {
        -(len + 112)
    };
    for idx in (1..=n).rev() {
        out.push((mag >> ((idx - 1) * 8)) as u8);
    }
}

/// Reads what [`write_vint`] wrote; `None` when the input ends early.
pub fn read_vint(r: &mut &[u8]) -> Option<i64> {
    let (&first, rest) = r.split_first()?;
    *r = rest;
    let first = first as i8;
    if first >= -112 {
        return Some(first as i64);
    }
    let negative = first < -120;
    let n = if negative {
        -(first as i32 + 120)
    } else {
        -(first as i32 + 112)
    } as usize;
    if r.len() < n {
        return None;
    }
    let mut v: i64 = 0;
    for &b in &r[..n] {
        v = (v << 8) | b as i64;
    }
    *r = &r[n..];
    Some(if negative { !v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credentials {
        Credentials {
            tokens: vec![
                (
                    "127.0.0.1:8030".into(),
                    Token {
                        identifier: (0..200u8).collect(),
                        password: vec![7; 20],
                        kind: AMRM_TOKEN_KIND.into(),
                        service: "127.0.0.1:8030".into(),
                    },
                ),
                (
                    "hdfs".into(),
                    Token {
                        identifier: vec![1, 2, 3],
                        password: vec![],
                        kind: "HDFS_DELEGATION_TOKEN".into(),
                        service: "127.0.0.1:9000".into(),
                    },
                ),
            ],
            secrets: vec![("s".into(), vec![9; 300])],
        }
    }

    #[test]
    fn vints_round_trip_like_hadoop_encodes_them() {
        // Bytes as WritableUtils.writeVLong writes them.
        let cases: [(i64, &[u8]); 6] = [
            (0, &[0]),
            (127, &[127]),
            (-112, &[0x90]),
            (128, &[0x8f, 0x80]),
            (300, &[0x8e, 0x01, 0x2c]),
            (-113, &[0x87, 0x70]),
        ];
        for (v, bytes) in cases {
            let mut out = Vec::new();
            write_vint(&mut out, v);
            assert_eq!(out, bytes, "encoding of {v}");
            let mut r = bytes;
            assert_eq!(read_vint(&mut r), Some(v));
            assert!(r.is_empty());
        }
        for v in [i64::MIN, -1_000_000, 65_536, i64::MAX] {
            let mut out = Vec::new();
            write_vint(&mut out, v);
            assert_eq!(read_vint(&mut out.as_slice()), Some(v));
        }
    }

    #[test]
    fn writable_token_file_parses() {
        // Built by hand as Credentials.writeTokenStorageToStream writes it.
        let mut f = b"HDTS\x00".to_vec();
        f.push(1); // one token
        f.extend([5]);
        f.extend(b"alias");
        f.extend([3, 0xa, 0xb, 0xc]); // identifier
        f.extend([2, 0x1, 0x2]); // password
        f.push(16);
        f.extend(b"YARN_AM_RM_TOKEN");
        f.push(14);
        f.extend(b"127.0.0.1:8030");
        f.push(0); // no secrets
        let c = Credentials::parse(&f).expect("parses");
        let t = c.token_of_kind(AMRM_TOKEN_KIND).expect("the AMRMToken");
        assert_eq!(t.identifier, [0xa, 0xb, 0xc]);
        assert_eq!(t.password, [1, 2]);
        assert_eq!(t.service, "127.0.0.1:8030");
        assert_eq!(c.tokens[0].0, "alias");
        assert_eq!(c.to_writable(), f);
    }

    #[test]
    fn both_formats_round_trip() {
        let c = sample();
        assert_eq!(Credentials::parse(&c.to_writable()).unwrap(), c);
        assert_eq!(Credentials::parse(&c.to_protobuf()).unwrap(), c);
    }

    #[test]
    fn damaged_files_are_rejected_with_the_reason() {
        let c = sample().to_writable();
        let e = Credentials::parse(&c[..c.len() - 10]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        assert!(
            Credentials::parse(b"HDTX\0\0")
                .unwrap_err()
                .contains("HDTS")
        );
        assert!(
            Credentials::parse(b"HDTS\x07")
                .unwrap_err()
                .contains("format 7")
        );
    }
}
