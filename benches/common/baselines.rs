//! Raw deadpool and bb8 over TCP with the same non-blocking peek on checkout as multiloop's
//! `Raw`: the baselines of `benches/pool.rs` and `benches/programs/checkout_cost.rs`.

use std::mem::MaybeUninit;
use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The check all three pools run on checkout: one non-blocking peek.
pub fn peek_ok(stream: &TcpStream) -> std::io::Result<()> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(stream).peek(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Err(std::io::Error::other("closed or unread bytes")),
    }
}

pub struct DeadpoolManager(pub SocketAddr);

impl deadpool::managed::Manager for DeadpoolManager {
    type Type = TcpStream;
    type Error = std::io::Error;

    async fn create(&self) -> std::io::Result<TcpStream> {
        TcpStream::connect(self.0).await
    }

    async fn recycle(
        &self,
        conn: &mut TcpStream,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<std::io::Error> {
        peek_ok(conn).map_err(deadpool::managed::RecycleError::Backend)
    }
}

pub struct Bb8Manager(pub SocketAddr);

impl bb8::ManageConnection for Bb8Manager {
    type Connection = TcpStream;
    type Error = std::io::Error;

    async fn connect(&self) -> std::io::Result<TcpStream> {
        TcpStream::connect(self.0).await
    }

    async fn is_valid(&self, conn: &mut TcpStream) -> std::io::Result<()> {
        peek_ok(conn)
    }

    fn has_broken(&self, _: &mut TcpStream) -> bool {
        false
    }
}
