//! The RPC client against an in-process server speaking Hadoop's side of the handshake:
//! SASL DIGEST-MD5 with the token, the connection context, then a call.

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::credentials::Token;
use super::proto::common::{
    IpcConnectionContextProto, RequestHeaderProto, RpcRequestHeaderProto, RpcResponseHeaderProto,
    RpcSaslProto, rpc_response_header_proto::RpcStatusProto, rpc_sasl_proto::SaslAuth,
    rpc_sasl_proto::SaslState,
};
use super::proto::yarn::{
    FinishApplicationMasterRequestProto, FinishApplicationMasterResponseProto,
};
use super::rpc::Connection;
use super::sasl;

async fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    buf
}

async fn reply(s: &mut TcpStream, call_id: i32, body: &impl Message) {
    let header = RpcResponseHeaderProto {
        call_id: call_id as u32,
        status: RpcStatusProto::Success as i32,
        ..Default::default()
    };
    let mut payload = header.encode_length_delimited_to_vec();
    payload.extend(body.encode_length_delimited_to_vec());
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend(payload);
    s.write_all(&out).await.unwrap();
}

/// Serves one connection as Hadoop would, checking the client's digest with the token's
/// password; returns the protocol of the connection context and the called method.
async fn serve(listener: TcpListener, token: Token) -> (String, String) {
    let (mut s, _) = listener.accept().await.unwrap();
    let mut preamble = [0u8; 7];
    s.read_exact(&mut preamble).await.unwrap();
    assert_eq!(&preamble, b"hrpc\x09\x00\xdf");
    let mut f = read_frame(&mut s).await;
    let mut r = f.as_slice();
    let h = RpcRequestHeaderProto::decode_length_delimited(&mut r).unwrap();
    assert_eq!(h.call_id, -33);
    let nego = RpcSaslProto::decode_length_delimited(&mut r).unwrap();
    assert_eq!(nego.state, SaslState::Negotiate as i32);
    let challenge =
        "realm=\"default\",nonce=\"srvnonce\",qop=\"auth\",charset=utf-8,algorithm=md5-sess";
    let offer = SaslAuth {
        method: "TOKEN".into(),
        mechanism: "DIGEST-MD5".into(),
        protocol: Some(String::new()),
        server_id: Some("default".into()),
        challenge: Some(challenge.as_bytes().to_vec()),
    };
    let negotiate = RpcSaslProto {
        state: SaslState::Negotiate as i32,
        auths: vec![
            SaslAuth {
                method: "KERBEROS".into(),
                mechanism: "GSSAPI".into(),
                ..Default::default()
            },
            offer,
        ],
        ..Default::default()
    };
    reply(&mut s, -33, &negotiate).await;
    f = read_frame(&mut s).await;
    let mut r = f.as_slice();
    RpcRequestHeaderProto::decode_length_delimited(&mut r).unwrap();
    let init = RpcSaslProto::decode_length_delimited(&mut r).unwrap();
    assert_eq!(init.state, SaslState::Initiate as i32);
    assert_eq!(init.auths[0].mechanism, "DIGEST-MD5");
    assert!(init.auths[0].challenge.is_none());
    let response = String::from_utf8(init.token.unwrap()).unwrap();
    let fields = sasl::parse_challenge(&response).unwrap();
    let (user, password) = sasl::token_credentials(&token);
    assert_eq!(fields["username"], user);
    assert_eq!(fields["digest-uri"], "/default");
    // The server's check: the same digest from its own copy of the password.
    let expected =
        sasl::respond(challenge, &user, &password, "/default", &fields["cnonce"]).unwrap();
    assert!(
        expected
            .response
            .contains(&format!("response={}", fields["response"]))
    );
    let success = RpcSaslProto {
        state: SaslState::Success as i32,
        token: Some(format!("rspauth={}", expected.expected_rspauth).into_bytes()),
        ..Default::default()
    };
    reply(&mut s, -33, &success).await;
    f = read_frame(&mut s).await;
    let mut r = f.as_slice();
    let h = RpcRequestHeaderProto::decode_length_delimited(&mut r).unwrap();
    assert_eq!(h.call_id, -3);
    let ctx = IpcConnectionContextProto::decode_length_delimited(&mut r).unwrap();
    assert!(ctx.user_info.is_none(), "token connections name no user");
    f = read_frame(&mut s).await;
    let mut r = f.as_slice();
    let h = RpcRequestHeaderProto::decode_length_delimited(&mut r).unwrap();
    let rh = RequestHeaderProto::decode_length_delimited(&mut r).unwrap();
    let req = FinishApplicationMasterRequestProto::decode_length_delimited(&mut r).unwrap();
    assert_eq!(req.diagnostics(), "done");
    let resp = FinishApplicationMasterResponseProto {
        is_unregistered: Some(true),
    };
    reply(&mut s, h.call_id, &resp).await;
    (ctx.protocol.unwrap_or_default(), rh.method_name)
}

#[tokio::test]
async fn handshake_and_call_against_a_hadoop_like_server() {
    let token = Token {
        identifier: b"appattempt_1_0001_000001".to_vec(),
        password: vec![42; 20],
        kind: "YARN_AM_RM_TOKEN".into(),
        service: String::new(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(serve(listener, token.clone()));
    let mut conn = Connection::connect(&addr, "P", &token)
        .await
        .expect("authenticated");
    let req = FinishApplicationMasterRequestProto {
        diagnostics: Some("done".into()),
        ..Default::default()
    };
    let resp: FinishApplicationMasterResponseProto = conn
        .call("finishApplicationMaster", &req)
        .await
        .expect("answered");
    assert!(resp.is_unregistered());
    let (protocol, method) = server.await.unwrap();
    assert_eq!(
        (protocol.as_str(), method.as_str()),
        ("P", "finishApplicationMaster")
    );
}

#[tokio::test]
async fn a_wrong_rspauth_fails_the_connection() {
    let token = Token {
        identifier: vec![1],
        password: vec![2],
        kind: "k".into(),
        service: String::new(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // The server holds another password: its rspauth cannot match.
    let other = Token {
        password: vec![3],
        ..token.clone()
    };
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut preamble = [0u8; 7];
        s.read_exact(&mut preamble).await.unwrap();
        read_frame(&mut s).await;
        let negotiate = RpcSaslProto {
            state: SaslState::Negotiate as i32,
            auths: vec![SaslAuth {
                method: "TOKEN".into(),
                mechanism: "DIGEST-MD5".into(),
                protocol: Some(String::new()),
                server_id: Some("default".into()),
                challenge: Some(b"nonce=\"n\",qop=\"auth\"".to_vec()),
            }],
            ..Default::default()
        };
        reply(&mut s, -33, &negotiate).await;
        let f = read_frame(&mut s).await;
        let mut r = f.as_slice();
        RpcRequestHeaderProto::decode_length_delimited(&mut r).unwrap();
        let init = RpcSaslProto::decode_length_delimited(&mut r).unwrap();
        let fields =
            sasl::parse_challenge(&String::from_utf8(init.token.unwrap()).unwrap()).unwrap();
        let (user, password) = sasl::token_credentials(&other);
        let theirs = sasl::respond(
            "nonce=\"n\",qop=\"auth\"",
            &user,
            &password,
            "/default",
            &fields["cnonce"],
        )
        .unwrap();
        let success = RpcSaslProto {
            state: SaslState::Success as i32,
            token: Some(format!("rspauth={}", theirs.expected_rspauth).into_bytes()),
            ..Default::default()
        };
        reply(&mut s, -33, &success).await;
    });
    let err = Connection::connect(&addr, "P", &token)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("rspauth"), "{err}");
    server.await.unwrap();
}
