//! The master's REST server also serves the web dashboard: its page at `/`, its modules by
//! name, the API where the API is, and Flink's JSON 404 for everything else, including any
//! method other than GET on a dashboard path.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use sluice_am::rest::{Dispatcher, RestServer};

/// (status, lower-cased headers, body) of a plain HTTP/1.1 request.
fn request(server: &RestServer, method: &str, path: &str) -> (u16, String, String) {
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("the request is sent");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("a response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn the_dashboard_is_served_next_to_the_api() {
    let server = RestServer::start(Arc::new(Dispatcher::default()), "127.0.0.1", 0, "127.0.0.1")
        .expect("the REST server starts");

    let (status, head, body) = request(&server, "GET", "/");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(body.contains(r#"src="app.js""#), "{body}");
    let (status, head, body) = request(&server, "GET", "/app.js");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(
        body.contains("v1/jobs/overview"),
        "the page reads the API by relative URLs"
    );

    // The API keeps its paths.
    let (status, _, body) = request(&server, "GET", "/v1/overview");
    assert_eq!(status, 200);
    assert!(body.contains("\"jobs-running\""), "{body}");

    for (method, path) in [("GET", "/nope.js"), ("POST", "/"), ("PATCH", "/app.js")] {
        let (status, _, body) = request(&server, method, path);
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(body.contains("\"errors\""), "{method} {path}: {body}");
    }
}
