use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;

const LIMITS: Limits = Limits {
    max_head: 8192,
    max_headers: 8,
    max_body: 16,
    timeout: Duration::from_secs(5),
};

/// Echoes the request (or its error) as text.
fn echo(request: Result<Request, RequestError>) -> Response {
    match request {
        Ok(r) => {
            let text = format!(
                "{} {} {}",
                r.method(),
                r.uri().path(),
                String::from_utf8_lossy(r.body())
            );
            response(StatusCode::OK, "text/plain", text)
        }
        Err(e) => response(StatusCode::BAD_REQUEST, "text/plain", e.to_string()),
    }
}

fn server() -> (DuplexStream, tokio::task::JoinHandle<()>) {
    server_with(LIMITS)
}

fn server_with(limits: Limits) -> (DuplexStream, tokio::task::JoinHandle<()>) {
    let (client, server) = duplex(1 << 16);
    let task = tokio::spawn(async move {
        let _ = serve(server, &limits, echo).await;
    });
    (client, task)
}

/// The raw reply to the raw `request`.
async fn raw(request: &[u8]) -> String {
    let (mut client, task) = server();
    client.write_all(request).await.unwrap();
    let mut reply = String::new();
    client.read_to_string(&mut reply).await.unwrap();
    task.await.unwrap();
    reply
}

#[tokio::test]
async fn one_request_then_close_with_title_case_headers() {
    let reply = raw(b"POST /x?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc").await;
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        reply.contains("\r\nContent-Type: text/plain\r\n"),
        "{reply}"
    );
    assert!(reply.contains("\r\nConnection: close\r\n"), "{reply}");
    assert!(reply.contains("\r\nContent-Length: 11\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nPOST /x abc"), "{reply}");
}

#[tokio::test]
async fn chunked_bodies_are_read_whole() {
    let reply = raw(
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.ends_with("POST /c abc"), "{reply}");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error() {
    let declared = raw(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 17\r\n\r\n").await;
    assert!(declared.ends_with("body over 16 bytes"), "{declared}");
    let chunked = raw(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n0123456789abcdefg\r\n0\r\n\r\n",
    )
    .await;
    assert!(chunked.ends_with("body over 16 bytes"), "{chunked}");
    let malformed = raw(b"\x01\x02 nonsense\r\n\r\n").await;
    assert!(malformed.starts_with("HTTP/1.1 400 "), "{malformed}");
    let headers = "X-A: 1\r\n".repeat(9);
    let many = raw(format!("GET / HTTP/1.1\r\n{headers}\r\n").as_bytes()).await;
    assert!(many.starts_with("HTTP/1.1 431 "), "{many}");
}

#[tokio::test]
async fn a_truncated_body_is_an_error() {
    let (mut client, task) = server();
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
        .await
        .unwrap();
    client.shutdown().await.unwrap();
    let mut reply = String::new();
    let _ = client.read_to_string(&mut reply).await;
    task.await.unwrap();
    assert!(reply.contains("truncated body"), "{reply}");
}

#[tokio::test]
async fn a_slow_body_times_out() {
    let (mut client, task) = server_with(Limits {
        timeout: Duration::from_millis(200),
        ..LIMITS
    });
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
        .await
        .unwrap();
    let mut reply = String::new();
    client.read_to_string(&mut reply).await.unwrap();
    task.await.unwrap();
    assert!(reply.ends_with("request not complete in time"), "{reply}");
}

#[tokio::test]
async fn the_client_reads_a_bounded_reply() {
    let request = || {
        hyper::Request::post("/echo")
            .header(header::HOST, "a")
            .body(Bytes::from_static(b"hi"))
            .unwrap()
    };
    let (client, task) = server();
    let (status, body) = exchange(client, request(), 64).await.unwrap();
    task.await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"POST /echo hi"[..]));

    let (client, task) = server();
    let error = exchange(client, request(), 4).await.unwrap_err();
    task.await.unwrap();
    assert!(matches!(error, ClientError::TooLarge(4)), "{error}");

    let (client, server) = duplex(64);
    drop(server);
    assert!(matches!(
        exchange(client, request(), 64).await,
        Err(ClientError::Http(_))
    ));
}
