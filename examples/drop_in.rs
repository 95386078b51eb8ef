//! multiloop as a drop-in dialer: `TcpStream::connect` replaced by `multiloop::connect`, and a
//! hyper client whose connections come from the same spread sources.
//!
//! ```text
//! cargo run --example drop_in --features hyper
//! ```
//!
//! It starts a small HTTP server of its own on 127.0.0.1, which answers with the client address
//! it saw.

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = start_server().await?;

    // Before: let stream = tokio::net::TcpStream::connect(addr).await?;
    let mut stream = multiloop::connect(addr).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: local\r\nconnection: close\r\n\r\n")
        .await?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    let seen = reply.rsplit("\r\n\r\n").next().unwrap_or("");
    println!("multiloop::connect: the server saw {seen}");

    // A hyper client on a multiloop dialer.
    let dialer = multiloop::Dialer::builder().build()?;
    let client: Client<_, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(dialer.clone());
    for _ in 0..3 {
        let response = client.get(format!("http://{addr}/").parse()?).await?;
        let body = response.into_body().collect().await?.to_bytes();
        println!("hyper: the server saw {}", String::from_utf8_lossy(&body));
    }
    println!("{:?}", dialer.stats());
    Ok(())
}

/// An HTTP/1.1 server that answers every request with the peer's address, then closes.
async fn start_server() -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = peer.ip().to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}
