//! The two socket options socket2 does not have.
//!
//! This module holds the crate's only `unsafe` code: two `setsockopt(2)` calls. Each option is one
//! thin function, in the style of socket2, whose doc names the OS option and the platforms that
//! have it. On other platforms the functions return [`io::ErrorKind::Unsupported`], and the dialer
//! falls back (for `IP_BIND_ADDRESS_NO_PORT`) or refuses the configuration (for
//! `IP_LOCAL_PORT_RANGE`).
#![allow(unsafe_code)]

use std::io;

use socket2::Socket;

/// `IP_LOCAL_PORT_RANGE` from `linux/in.h` (Linux 6.3+). libc does not export it yet.
#[cfg(target_os = "linux")]
const IP_LOCAL_PORT_RANGE: libc::c_int = 51;

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2+).
///
/// With the option set, `bind(addr, 0)` records only the address and leaves the choice of the
/// source port to `connect`, which picks it by the full 4-tuple. Without it, `bind` reserves a port
/// for the address alone and cannot reuse a pair held by TIME_WAIT: with a source's range 95-99%
/// full of TIME_WAIT, such dials measured about 0.6× the rate of plain `connect` (BENCHMARKS.md,
/// section 1). The option sits at the `IPPROTO_IP` level and applies to IPv6 sockets as well.
///
/// # Errors
///
/// [`io::ErrorKind::Unsupported`] on platforms other than Linux; the OS error otherwise.
pub(crate) fn set_bind_address_no_port(socket: &Socket, on: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        set_u32(
            socket,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            u32::from(on),
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, on);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "IP_BIND_ADDRESS_NO_PORT is Linux-only",
        ))
    }
}

/// Sets `IP_LOCAL_PORT_RANGE` (Linux 6.3+): the ephemeral port range for this one socket.
///
/// The kernel intersects it with `net.ipv4.ip_local_port_range`. `lo` and `hi` are inclusive.
/// The crate uses it to make port exhaustion reproducible without root: a socket limited to 50
/// ports runs out after 50 churned connections from one source address.
///
/// # Errors
///
/// [`io::ErrorKind::Unsupported`] on platforms other than Linux; `ENOPROTOOPT` on kernels before
/// 6.3.
pub(crate) fn set_local_port_range(socket: &Socket, lo: u16, hi: u16) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let value = u32::from(lo) | (u32::from(hi) << 16);
        set_u32(socket, libc::IPPROTO_IP, IP_LOCAL_PORT_RANGE, value)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, lo, hi);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "IP_LOCAL_PORT_RANGE is Linux-only (6.3+)",
        ))
    }
}

#[cfg(target_os = "linux")]
fn set_u32(socket: &Socket, level: libc::c_int, name: libc::c_int, value: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    let len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: the fd is owned by `socket`, which outlives the call; the option value points to a
    // live, properly aligned `u32` and `len` is its exact size, which is what both options expect.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
