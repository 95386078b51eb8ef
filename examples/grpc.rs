//! gRPC through the multiloop dialer: tonic channels built with
//! `Endpoint::connect_with_connector(dialer)`, calling tonic's standard health service on a
//! loopback server of its own, which prints the source address of every connection it accepts.
//!
//! ```text
//! cargo run --example grpc --features hyper
//! ```

use std::time::Duration;

use tonic::transport::{Endpoint, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server: tonic's health service, on a listener that reports each peer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, peer)| {
            println!("server: a connection from {peer}");
            stream
        });
        Some((accepted, listener))
    });
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("example.Cache", ServingStatus::Serving)
        .await;
    let server = tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );

    // The client: one dialer, several channels, each its own connection from its own source.
    let dialer = multiloop::Dialer::builder().build()?;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    for _ in 0..4 {
        let channel = endpoint.connect_with_connector(dialer.clone()).await?;
        let mut client = HealthClient::new(channel);
        let reply = client
            .check(HealthCheckRequest {
                service: "example.Cache".to_owned(),
            })
            .await?;
        println!("client: example.Cache is {:?}", reply.into_inner().status());
    }
    println!(
        "{} connections from {} distinct sources",
        dialer.stats().dials_ok,
        dialer.stats().distinct_sources
    );
    server.abort();
    Ok(())
}
