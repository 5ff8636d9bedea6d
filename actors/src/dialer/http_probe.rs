//! One HTTP probe through a dialer: a GET whose status line says whether
//! the path carries traffic, and how long that took. The dialer's actor
//! runs it for the TCP track's health; the API runs it for a delay test.
//! Plain HTTP only; the body is never read.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::failure::{Blame, Failure, Stage};
use super::path::Dialer;
use super::settings::HttpUrl;
use super::socks5::TargetAddr;
use crate::io_class::IoClass;

fn session_failure(e: &std::io::Error, dialer: &Dialer) -> Failure {
    Failure::io(e, Stage::Session, dialer.hop(), true)
}

/// An HTTP GET of `url` through `dialer`, answered by `deadline`: the time
/// from the dial to the status line, when that status is 2xx. Reports
/// nothing to the dialer's health (the caller decides what it means).
pub async fn get(
    dialer: &Dialer,
    url: &HttpUrl,
    deadline: tokio::time::Instant,
) -> Result<Duration, Failure> {
    let started = Instant::now();
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let target = match url.host.parse() {
        Ok(ip) => TargetAddr::Ip(std::net::SocketAddr::new(ip, url.port)),
        Err(_) => TargetAddr::Domain(url.host.clone(), url.port),
    };
    let mut stream = dialer.dial_tcp(&target, deadline).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ward/{}\r\nConnection: close\r\n\r\n",
        url.path,
        env!("CARGO_PKG_VERSION")
    );
    let sent = async {
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await
    };
    sent.await.map_err(|e| session_failure(&e, dialer))?;
    // The status line is all a probe needs.
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 128];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| session_failure(&e, dialer))?;
        if n == 0 {
            let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
            return Err(session_failure(&eof, dialer));
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(code) if (200..300).contains(&code) => Ok(started.elapsed()),
        _ => Err(Failure {
            class: IoClass::PathFailed,
            stage: Stage::Session,
            blame: Blame::Path,
            reason: format!(
                "probe answered {:?}",
                line.lines().next().unwrap_or_default()
            ),
        }),
    }
}
