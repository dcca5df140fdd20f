//! A Hadoop RPC client connection (protocol version 9, protobuf engine): the connection
//! header, SASL DIGEST-MD5 with a token, the connection context, then calls, each framed as
//! a 4-byte big-endian length followed by length-delimited `RpcRequestHeaderProto`,
//! `RequestHeaderProto` and request; answers are a length, a delimited
//! `RpcResponseHeaderProto` and, on success, the delimited response.

use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::credentials::Token;
use super::proto::common::{
    IpcConnectionContextProto, RequestHeaderProto, RpcKindProto, RpcRequestHeaderProto,
    RpcResponseHeaderProto, RpcSaslProto, rpc_request_header_proto::OperationProto,
    rpc_response_header_proto::RpcStatusProto, rpc_sasl_proto::SaslAuth, rpc_sasl_proto::SaslState,
};
use super::{Result, YarnError, sasl};

/// Hadoop's RPC protocol version.
const RPC_VERSION: u8 = 9;
/// Authentication protocol byte of the connection header: SASL.
const AUTH_SASL: u8 = 0xdf;
/// Call ids with a meaning of their own (`RpcConstants`).
const CONNECTION_CONTEXT_CALL_ID: i32 = -3;
const SASL_CALL_ID: i32 = -33;
/// The protocol version of YARN's protobuf protocols.
const PROTOCOL_VERSION: u64 = 1;
/// Largest frame accepted from a server.
const MAX_FRAME: usize = 128 << 20;
/// How long connecting, authenticating or one call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Serializes one request frame: length, then each message length-delimited.
pub fn frame(messages: &[&dyn MessageBytes]) -> Vec<u8> {
    let mut payload = Vec::new();
    for m in messages {
        payload.extend(m.delimited());
    }
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend(payload);
    out
}

/// A message written length-delimited (object-safe wrapper over [`prost::Message`]).
pub trait MessageBytes {
    fn delimited(&self) -> Vec<u8>;
}

impl<M: Message> MessageBytes for M {
    fn delimited(&self) -> Vec<u8> {
        self.encode_length_delimited_to_vec()
    }
}

/// The header of a request with call id `call_id`.
pub fn request_header(call_id: i32, client_id: &[u8], retry_count: i32) -> RpcRequestHeaderProto {
    RpcRequestHeaderProto {
        rpc_kind: Some(RpcKindProto::RpcProtocolBuffer as i32),
        rpc_op: Some(OperationProto::RpcFinalPacket as i32),
        call_id,
        client_id: client_id.to_vec(),
        retry_count: Some(retry_count),
    }
}

/// Splits a response frame's payload into its header and the rest.
pub fn parse_response<'a>(
    addr: &str,
    mut payload: &'a [u8],
) -> Result<(RpcResponseHeaderProto, &'a [u8])> {
    let header = RpcResponseHeaderProto::decode_length_delimited(&mut payload)
        .map_err(|e| YarnError::protocol(addr, format!("bad response header: {e}")))?;
    Ok((header, payload))
}

/// An authenticated connection to one server for one protocol.
pub struct Connection {
    addr: String,
    protocol: String,
    stream: TcpStream,
    client_id: [u8; 16],
    next_call: i32,
}

impl Connection {
    /// Connects to `addr`, authenticates with `token` and announces `protocol` (e.g.
    /// `org.apache.hadoop.yarn.api.ApplicationMasterProtocolPB`).
    ///
    /// Fails after [`CALL_TIMEOUT`]. Cancel-safe: dropping the future closes the socket.
    pub async fn connect(addr: &str, protocol: &str, token: &Token) -> Result<Connection> {
        let fut = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| YarnError::io(format!("connecting to {addr}"), e))?;
            let _ = stream.set_nodelay(true);
            let mut conn = Connection {
                addr: addr.to_string(),
                protocol: protocol.to_string(),
                stream,
                client_id: random_bytes(),
                next_call: 0,
            };
            let mut preamble = b"hrpc".to_vec();
            preamble.extend([RPC_VERSION, 0, AUTH_SASL]);
            conn.write(&preamble).await?;
            conn.authenticate(token).await?;
            let context = IpcConnectionContextProto {
                // With a token the connection itself names the user: Hadoop sends none.
                user_info: None,
                protocol: Some(protocol.to_string()),
            };
            let header = request_header(CONNECTION_CONTEXT_CALL_ID, &conn.client_id, -1);
            conn.write(&frame(&[&header, &context])).await?;
            Ok(conn)
        };
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .map_err(|_| YarnError::Timeout {
                addr: addr.to_string(),
                what: "connecting and authenticating".into(),
                secs: CALL_TIMEOUT.as_secs(),
            })?
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn authenticate(&mut self, token: &Token) -> Result<()> {
        let sasl_err = |addr: &str, message: String| YarnError::Sasl {
            addr: addr.to_string(),
            message,
        };
        self.send_sasl(RpcSaslProto {
            version: None,
            state: SaslState::Negotiate as i32,
            token: None,
            auths: vec![],
        })
        .await?;
        let (user, password) = sasl::token_credentials(token);
        let cnonce = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(random_bytes())
        };
        let mut digest_uri = String::new();
        let mut expected = None;
        loop {
            let msg = self.read_sasl().await?;
            let respond = |challenge: &[u8], uri: &str| {
                sasl::respond(
                    &String::from_utf8_lossy(challenge),
                    &user,
                    &password,
                    uri,
                    &cnonce,
                )
                .map_err(|m| sasl_err(&self.addr, m))
            };
            match SaslState::try_from(msg.state) {
                Ok(SaslState::Negotiate) => {
                    let Some(auth) = msg
                        .auths
                        .iter()
                        .find(|a| a.method == "TOKEN" && a.mechanism == "DIGEST-MD5")
                    else {
                        let offered: Vec<String> = msg
                            .auths
                            .iter()
                            .map(|a| format!("{}/{}", a.method, a.mechanism))
                            .collect();
                        return Err(sasl_err(
                            &self.addr,
                            format!("the server offers {offered:?}, not TOKEN/DIGEST-MD5"),
                        ));
                    };
                    digest_uri = format!(
                        "{}/{}",
                        auth.protocol.as_deref().unwrap_or_default(),
                        auth.server_id.as_deref().unwrap_or_default()
                    );
                    let chosen = SaslAuth {
                        challenge: None,
                        ..auth.clone()
                    };
                    let token = match &auth.challenge {
                        Some(c) => {
                            let r = respond(c, &digest_uri)?;
                            expected = Some(r.expected_rspauth);
                            Some(r.response.into_bytes())
                        }
                        None => None,
                    };
                    self.send_sasl(RpcSaslProto {
                        version: None,
                        state: SaslState::Initiate as i32,
                        token,
                        auths: vec![chosen],
                    })
                    .await?;
                }
                Ok(SaslState::Challenge) => {
                    let c = msg.token.unwrap_or_default();
                    let r = respond(&c, &digest_uri)?;
                    expected = Some(r.expected_rspauth);
                    self.send_sasl(RpcSaslProto {
                        version: None,
                        state: SaslState::Response as i32,
                        token: Some(r.response.into_bytes()),
                        auths: vec![],
                    })
                    .await?;
                }
                Ok(SaslState::Success) => {
                    if let (Some(t), Some(e)) = (&msg.token, &expected) {
                        sasl::check_rspauth(&String::from_utf8_lossy(t), e)
                            .map_err(|m| sasl_err(&self.addr, m))?;
                    }
                    return Ok(());
                }
                other => {
                    return Err(sasl_err(
                        &self.addr,
                        format!("unexpected SASL state {other:?}"),
                    ));
                }
            }
        }
    }

    async fn send_sasl(&mut self, msg: RpcSaslProto) -> Result<()> {
        let header = request_header(SASL_CALL_ID, &[], -1);
        self.write(&frame(&[&header, &msg])).await
    }

    async fn read_sasl(&mut self) -> Result<RpcSaslProto> {
        let payload = self.read_frame().await?;
        let (header, mut rest) = parse_response(&self.addr, &payload)?;
        check_status(&self.addr, "SASL negotiation", &header)?;
        if header.call_id as i32 != SASL_CALL_ID {
            return Err(YarnError::protocol(
                &self.addr,
                format!(
                    "expected a SASL answer, got call id {}",
                    header.call_id as i32
                ),
            ));
        }
        RpcSaslProto::decode_length_delimited(&mut rest)
            .map_err(|e| YarnError::protocol(&self.addr, format!("bad SASL message: {e}")))
    }

    /// Calls `method` of the connection's protocol.
    ///
    /// Fails after [`CALL_TIMEOUT`]. Not cancel-safe: a call dropped midway leaves the
    /// connection in an unknown state, so callers drop the connection with it. After an
    /// `Io`, `Timeout` or `Protocol` error the connection is unusable; after `Remote` (the
    /// server's exception) it can be used again.
    pub async fn call<Q: Message, R: Message + Default>(
        &mut self,
        method: &str,
        request: &Q,
    ) -> Result<R> {
        let addr = self.addr.clone();
        let fut = async {
            let call_id = self.next_call;
            self.next_call = self.next_call.wrapping_add(1) & i32::MAX;
            let header = request_header(call_id, &self.client_id, 0);
            let rh = RequestHeaderProto {
                method_name: method.to_string(),
                declaring_class_protocol_name: self.protocol.clone(),
                client_protocol_version: PROTOCOL_VERSION,
            };
            self.write(&frame(&[&header, &rh, request])).await?;
            let payload = self.read_frame().await?;
            let (header, mut rest) = parse_response(&self.addr, &payload)?;
            check_status(&self.addr, method, &header)?;
            if header.call_id as i32 != call_id {
                return Err(YarnError::protocol(
                    &self.addr,
                    format!(
                        "answer to call {} while waiting for {call_id}",
                        header.call_id
                    ),
                ));
            }
            R::decode_length_delimited(&mut rest)
                .map_err(|e| YarnError::protocol(&self.addr, format!("bad {method} response: {e}")))
        };
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .map_err(|_| YarnError::Timeout {
                addr,
                what: method.to_string(),
                secs: CALL_TIMEOUT.as_secs(),
            })?
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| YarnError::io(format!("writing to {}", self.addr), e))
    }

    async fn read_frame(&mut self) -> Result<Vec<u8>> {
        let what = || format!("reading from {}", self.addr);
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .await
            .map_err(|e| YarnError::io(what(), e))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(YarnError::protocol(
                &self.addr,
                format!("a frame of {len} bytes"),
            ));
        }
        let mut buf = vec![0u8; len];
        self.stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| YarnError::io(what(), e))?;
        Ok(buf)
    }
}

fn check_status(addr: &str, method: &str, h: &RpcResponseHeaderProto) -> Result<()> {
    if h.status == RpcStatusProto::Success as i32 {
        return Ok(());
    }
    let class = h.exception_class_name.clone().unwrap_or_default();
    let message = h.error_msg.clone().unwrap_or_default();
    // The first line of Java's message is the useful part; the rest is a stack trace.
    let message = message.lines().next().unwrap_or_default().to_string();
    if class.contains("Sasl") || class.contains("AccessControl") || class.contains("Token") {
        return Err(YarnError::Sasl {
            addr: addr.to_string(),
            message: format!("{class}: {message}"),
        });
    }
    Err(YarnError::Remote {
        addr: addr.to_string(),
        method: method.to_string(),
        class,
        message,
    })
}

/// 16 bytes unlikely to repeat: a client id or a nonce (not key material).
fn random_bytes() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yarn::proto::yarn::RegisterApplicationMasterRequestProto;

    #[test]
    fn request_frames_carry_length_and_delimited_parts() {
        let header = request_header(7, &[1; 16], 0);
        let rh = RequestHeaderProto {
            method_name: "registerApplicationMaster".into(),
            declaring_class_protocol_name: "P".into(),
            client_protocol_version: 1,
        };
        let req = RegisterApplicationMasterRequestProto {
            host: Some("h".into()),
            rpc_port: Some(8081),
            tracking_url: Some("http://h:8081/".into()),
        };
        let f = frame(&[&header, &rh, &req]);
        let len = u32::from_be_bytes(f[..4].try_into().unwrap()) as usize;
        assert_eq!(len, f.len() - 4);
        let mut rest = &f[4..];
        let h = RpcRequestHeaderProto::decode_length_delimited(&mut rest).unwrap();
        assert_eq!(h.call_id, 7);
        assert_eq!(h.rpc_kind, Some(2));
        assert_eq!(h.client_id, [1; 16]);
        let r = RequestHeaderProto::decode_length_delimited(&mut rest).unwrap();
        assert_eq!(r, rh);
        let q = RegisterApplicationMasterRequestProto::decode_length_delimited(&mut rest).unwrap();
        assert_eq!(q, req);
        assert!(rest.is_empty());
    }

    #[test]
    fn special_call_ids_are_written_as_hadoop_reads_them() {
        // The request's call id is a zigzag sint32: -33 is the single varint byte 65 (0x41),
        // which a uint32 encoding would have sent as 0x80000010 after the server's decoding.
        let h = request_header(SASL_CALL_ID, &[], -1);
        let bytes = h.encode_to_vec();
        let at = bytes.iter().position(|&b| b == 0x18).expect("field 3");
        assert_eq!(bytes[at + 1], 0x41);
        assert_eq!(
            RpcRequestHeaderProto::decode(bytes.as_slice())
                .unwrap()
                .call_id,
            SASL_CALL_ID
        );
    }

    #[test]
    fn error_responses_name_the_exception() {
        let header = RpcResponseHeaderProto {
            call_id: 3,
            status: RpcStatusProto::Error as i32,
            exception_class_name: Some(
                "org.apache.hadoop.yarn.exceptions.InvalidApplicationMasterRequestException".into(),
            ),
            error_msg: Some("Application doesn't exist\n\tat stack".into()),
            ..Default::default()
        };
        let payload = header.encode_length_delimited_to_vec();
        let (h, rest) = parse_response("rm:8030", &payload).unwrap();
        assert!(rest.is_empty());
        let e = check_status("rm:8030", "allocate", &h)
            .unwrap_err()
            .to_string();
        assert!(e.contains("allocate at rm:8030"), "{e}");
        assert!(e.contains("Application doesn't exist"), "{e}");
        assert!(!e.contains("stack"), "{e}");
    }
}
