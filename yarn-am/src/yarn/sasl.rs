//! The client side of SASL DIGEST-MD5 (RFC 2831) as Hadoop's token authentication uses it:
//! username and password are the base64 of the token's identifier and password, the realm is
//! `default`, and only quality of protection `auth` is spoken (no wrapping of later traffic;
//! a cluster with `hadoop.rpc.protection` above `authentication` is refused with that reason).

use std::collections::HashMap;

use base64::Engine;
use md5::{Digest, Md5};

use super::credentials::Token;

/// Hadoop's realm for token authentication (`SaslRpcServer.SASL_DEFAULT_REALM`).
pub const DEFAULT_REALM: &str = "default";

/// The username and password DIGEST-MD5 uses for `token`.
pub fn token_credentials(token: &Token) -> (String, String) {
    let b64 = base64::engine::general_purpose::STANDARD;
    (b64.encode(&token.identifier), b64.encode(&token.password))
}

/// The server's challenge, `key=value` pairs with optionally quoted values.
pub fn parse_challenge(text: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("'{}' has no value in the challenge", key.trim()));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value of '{key}'")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        let key = key.trim().to_ascii_lowercase();
        // RFC 2831 allows several realms and qop lists; Hadoop's servers send one of each.
        out.entry(key).or_insert_with(|| value.trim().to_string());
    }
}

/// The answer to a DIGEST-MD5 challenge, and what the server's `rspauth` must then be.
#[derive(Debug, Clone)]
pub struct DigestResponse {
    pub response: String,
    pub expected_rspauth: String,
}

/// Computes the client's response (RFC 2831 2.1.2) for `challenge`. `digest_uri` is
/// `<protocol>/<server id>` as the server's negotiation named them; `cnonce` is the client's
/// nonce (random in use, fixed in tests).
pub fn respond(
    challenge: &str,
    username: &str,
    password: &str,
    digest_uri: &str,
    cnonce: &str,
) -> Result<DigestResponse, String> {
    let fields = parse_challenge(challenge)?;
    let nonce = fields
        .get("nonce")
        .ok_or("the challenge has no nonce")?
        .clone();
    let qops: Vec<&str> = fields
        .get("qop")
        .map(|q| q.split(',').map(str::trim).collect())
        .unwrap_or_else(|| vec!["auth"]);
    if !qops.contains(&"auth") {
        return Err(format!(
            "the server requires quality of protection {qops:?}; only 'auth' is supported \
             (set hadoop.rpc.protection to authentication)"
        ));
    }
    if let Some(alg) = fields.get("algorithm")
        && alg != "md5-sess"
    {
        return Err(format!("unsupported digest algorithm '{alg}'"));
    }
    let realm = fields
        .get("realm")
        .cloned()
        .unwrap_or_else(|| DEFAULT_REALM.to_string());
    let utf8 = fields.get("charset").is_some_and(|c| c == "utf-8");
    let nc = "00000001";
    let qop = "auth";
    let response = response_value(
        username,
        &realm,
        password,
        &nonce,
        cnonce,
        nc,
        qop,
        &format!("AUTHENTICATE:{digest_uri}"),
    );
    let expected_rspauth = response_value(
        username,
        &realm,
        password,
        &nonce,
        cnonce,
        nc,
        qop,
        &format!(":{digest_uri}"),
    );
    let mut text = String::new();
    if utf8 {
        text.push_str("charset=utf-8,");
    }
    text.push_str(&format!(
        "username=\"{}\",realm=\"{}\",nonce=\"{}\",nc={nc},cnonce=\"{}\",digest-uri=\"{}\",\
         maxbuf=65536,response={response},qop={qop}",
        quote(username),
        quote(&realm),
        quote(&nonce),
        quote(cnonce),
        quote(digest_uri),
    ));
    Ok(DigestResponse {
        response: text,
        expected_rspauth,
    })
}

/// Checks the server's final message `rspauth=<hex>`.
pub fn check_rspauth(server_final: &str, expected: &str) -> Result<(), String> {
    let fields = parse_challenge(server_final)?;
    match fields.get("rspauth") {
        Some(r) if r == expected => Ok(()),
        Some(_) => Err("the server's rspauth does not match: it does not know the token".into()),
        None => Err(format!(
            "the server's final message has no rspauth: {server_final}"
        )),
    }
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HEX(KD(HEX(H(A1)), nonce:nc:cnonce:qop:HEX(H(A2)))) with A1 of md5-sess.
#[allow(clippy::too_many_arguments)]
fn response_value(
    username: &str,
    realm: &str,
    password: &str,
    nonce: &str,
    cnonce: &str,
    nc: &str,
    qop: &str,
    a2: &str,
) -> String {
    let secret = md5(&[
        username.as_bytes(),
        b":",
        realm.as_bytes(),
        b":",
        password.as_bytes(),
    ]);
    let a1 = md5(&[&secret, b":", nonce.as_bytes(), b":", cnonce.as_bytes()]);
    let ha2 = hex(&md5(&[a2.as_bytes()]));
    hex(&md5(&[
        hex(&a1).as_bytes(),
        b":",
        nonce.as_bytes(),
        b":",
        nc.as_bytes(),
        b":",
        cnonce.as_bytes(),
        b":",
        qop.as_bytes(),
        b":",
        ha2.as_bytes(),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2831 section 4, the IMAP example.
    const CHALLENGE: &str = "realm=\"elwood.innosoft.com\",nonce=\"OA6MG9tEQGm2hh\",qop=\"auth\",\
                             algorithm=md5-sess,charset=utf-8";

    #[test]
    fn rfc_2831_example_response_and_rspauth() {
        let r = respond(
            CHALLENGE,
            "chris",
            "secret",
            "imap/elwood.innosoft.com",
            "OA6MHXh6VqTrRk",
        )
        .expect("a response");
        assert!(
            r.response
                .contains("response=d388dad90d4bbd760a152321f2143af7"),
            "{}",
            r.response
        );
        assert!(r.response.starts_with("charset=utf-8,username=\"chris\""));
        assert!(
            r.response
                .contains("digest-uri=\"imap/elwood.innosoft.com\"")
        );
        assert_eq!(r.expected_rspauth, "ea40f60335c427b5527b84dbabcdfffd");
        check_rspauth(
            "rspauth=ea40f60335c427b5527b84dbabcdfffd",
            &r.expected_rspauth,
        )
        .expect("the example's rspauth matches");
        assert!(check_rspauth("rspauth=00", &r.expected_rspauth).is_err());
    }

    #[test]
    fn challenges_with_quotes_and_escapes_parse() {
        let f = parse_challenge("realm=\"a,\\\"b\",nonce=xyz , qop=\"auth,auth-int\"").unwrap();
        assert_eq!(f["realm"], "a,\"b");
        assert_eq!(f["nonce"], "xyz");
        assert_eq!(f["qop"], "auth,auth-int");
        assert!(parse_challenge("realm=\"open").is_err());
    }

    #[test]
    fn privacy_only_servers_are_refused_with_the_setting_named() {
        let e = respond("nonce=\"n\",qop=\"auth-conf\"", "u", "p", "/default", "c").unwrap_err();
        assert!(e.contains("hadoop.rpc.protection"), "{e}");
    }

    #[test]
    fn token_credentials_are_base64() {
        let t = Token {
            identifier: vec![0xff, 0, 1],
            password: b"pw".to_vec(),
            kind: "k".into(),
            service: "s".into(),
        };
        assert_eq!(token_credentials(&t), ("/wAB".into(), "cHc=".into()));
    }
}
