//! The dialer as tonic's connector (`Endpoint::connect_with_connector`): gRPC health checks to
//! a real tonic server on loopback, arriving from spread source addresses.
#![cfg(feature = "hyper")]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Endpoint, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_go_through_the_dialer_from_spread_sources() {
    // tonic's standard health service, on a listener that records each peer address.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peers: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    let incoming =
        futures_util::stream::unfold((listener, peers.clone()), |(l, seen)| async move {
            let accepted = l.accept().await.map(|(stream, peer)| {
                seen.lock().unwrap().push(peer);
                stream
            });
            Some((accepted, (l, seen)))
        });
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("multiloop.Cache", ServingStatus::Serving)
        .await;
    let server = tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );

    let dialer = multiloop::Dialer::builder().build().unwrap();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    // Four channels, so four connections; several calls on each.
    for _ in 0..4 {
        let channel = tokio::time::timeout(
            Duration::from_secs(10),
            endpoint.connect_with_connector(dialer.clone()),
        )
        .await
        .unwrap()
        .unwrap();
        let mut client = HealthClient::new(channel);
        for service in ["multiloop.Cache", ""] {
            let reply = client
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .unwrap();
            assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);
        }
        let unknown = client
            .check(HealthCheckRequest {
                service: "no.such.Service".to_owned(),
            })
            .await
            .expect_err("an unknown service is NOT_FOUND");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }

    let peers = peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 4, "one connection per channel: {peers:?}");
    let sources: HashSet<IpAddr> = peers.iter().map(SocketAddr::ip).collect();
    for source in &sources {
        assert!(dialer.sources().contains(*source), "{source}");
        assert_ne!(*source, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    assert!(sources.len() > 1, "spread over sources: {sources:?}");
    assert_eq!(dialer.stats().dials_ok, 4);
    server.abort();
}
