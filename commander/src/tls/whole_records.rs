//! Waking the TLS reader once per record, not once per TCP segment.
//!
//! rustls can do nothing with part of a record: it decrypts whole records
//! (up to 16 KiB of plaintext). On a real link the bytes of one record
//! arrive as a dozen 1448-byte segments, and with the socket's default
//! low-water mark of one byte each segment wakes the connection's task,
//! which reads it, hands it to rustls, and finds nothing to decrypt yet.
//! Measured on a 1 Gbit link (bench/RESULTS.md §15): the commander spent
//! 16 CPU-seconds receiving a 2 GiB upload that costs it 2.4 on loopback,
//! where segments are 64 KiB.
//!
//! [`WholeRecords`] reads the 5-byte record headers as they pass and, each
//! time the reader has to wait, sets `SO_RCVLOWAT` to the bytes the current
//! record still lacks: the kernel then wakes the task once the record can
//! be whole. It never waits for bytes the peer has not committed to send
//! (the record's own length says they are coming), so small records — a
//! PING, a request, a heartbeat — are not delayed; and the kernel wakes the
//! reader anyway when its receive buffer runs short.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TLS record header: content type, version, length.
const HEADER: usize = 5;

/// The longest TLS 1.3 record body (2^14 + 256); the low-water mark never
/// asks for more.
const MAX_BODY: usize = (1 << 14) + 256;

/// A TCP stream carrying TLS records whose reader is woken once per
/// record (see the module's documentation). Writes pass through.
#[derive(Debug)]
pub struct WholeRecords {
    tcp: TcpStream,
    records: Records,
    /// The low-water mark now set on the socket.
    lowat: usize,
}

impl WholeRecords {
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            records: Records::default(),
            lowat: 1,
        }
    }

    /// Before the reader waits: wake it when the current record (or its
    /// header) can be complete. Best effort: a kernel that refuses the
    /// option leaves the default, one byte.
    fn pace(&mut self) {
        let want = self.records.missing().clamp(1, MAX_BODY);
        if want != self.lowat && set_rcvlowat(&self.tcp, want).is_ok() {
            self.lowat = want;
        }
    }
}

/// Where the byte stream is among its records.
#[derive(Debug, Default)]
struct Records {
    /// The current record's header, as far as it has arrived.
    header: [u8; HEADER],
    header_seen: usize,
    /// Body bytes of the current record not yet read.
    body_left: usize,
}

impl Records {
    /// Follows `bytes`, the next ones read from the stream.
    fn saw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER - self.header_seen).min(bytes.len());
            self.header[self.header_seen..self.header_seen + n].copy_from_slice(&bytes[..n]);
            self.header_seen += n;
            bytes = &bytes[n..];
            if self.header_seen == HEADER {
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.header_seen = 0;
            }
        }
    }

    /// Bytes still to read before the reader can make progress: the rest
    /// of the current record's body, or of the next header.
    fn missing(&self) -> usize {
        if self.body_left > 0 {
            self.body_left
        } else {
            HEADER - self.header_seen
        }
    }
}

/// `setsockopt(SO_RCVLOWAT)`: the bytes a TCP socket holds before it is
/// readable. Neither rustix nor socket2 offers it: the one `unsafe` call
/// in Ark's own code.
#[allow(unsafe_code)]
fn set_rcvlowat(tcp: &TcpStream, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is an open socket borrowed from `tcp` for the
    // call; the option value is a c_int on the stack, passed with its size.
    let rc = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl AsyncRead for WholeRecords {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.records.saw(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                // The waker is registered: if the new mark is already
                // met, setting it signals readiness at once.
                this.pace();
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for WholeRecords {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: usize) -> Vec<u8> {
        let mut r = vec![23, 3, 3];
        r.extend_from_slice(&(len as u16).to_be_bytes());
        r.resize(HEADER + len, 0xAB);
        r
    }

    #[test]
    fn the_missing_bytes_follow_records_split_anywhere() {
        let stream: Vec<u8> = [record(16_401), record(0), record(37)].concat();
        // Every split point, in pieces of 1, 7 and 1448 bytes.
        for piece in [1, 7, 1448] {
            let mut records = Records::default();
            let mut at = 0;
            for chunk in stream.chunks(piece) {
                records.saw(chunk);
                at += chunk.len();
                let expected = match at {
                    a if a < HEADER => HEADER - a,
                    a if a < HEADER + 16_401 => HEADER + 16_401 - a,
                    // The empty record: only its header is ever missing.
                    a if a < 2 * HEADER + 16_401 => 2 * HEADER + 16_401 - a,
                    a if a < 3 * HEADER + 16_401 => 3 * HEADER + 16_401 - a,
                    a if a < 3 * HEADER + 16_401 + 37 => 3 * HEADER + 16_401 + 37 - a,
                    _ => HEADER,
                };
                assert_eq!(records.missing(), expected, "after {at} bytes in {piece}s");
            }
        }
    }

    /// Over a real socket pair: a reader waiting for the rest of a record
    /// is not woken by part of it, is by its last byte, and a small record
    /// after it arrives without waiting for anything more.
    #[tokio::test]
    async fn the_reader_wakes_when_the_record_is_whole_and_small_records_pass() -> io::Result<()> {
        use std::time::Duration;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::time::timeout;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut sender = TcpStream::connect(listener.local_addr()?).await?;
        let (tcp, _) = listener.accept().await?;
        let mut reader = WholeRecords::new(tcp);
        let mut buf = vec![0u8; 64 * 1024];
        let big = record(10_000);
        sender.write_all(&big[..100]).await?;
        assert_eq!(reader.read(&mut buf).await?, 100);

        sender.write_all(&big[100..1100]).await?;
        let early = timeout(Duration::from_millis(300), reader.read(&mut buf)).await;
        assert!(early.is_err(), "woken with part of the record: {early:?}");

        sender.write_all(&big[1100..]).await?;
        let whole = timeout(Duration::from_secs(5), reader.read(&mut buf)).await;
        assert_eq!(
            whole.ok().transpose()?,
            Some(big.len() - 100),
            "woken once whole"
        );

        let small = record(37);
        sender.write_all(&small).await?;
        let passed = timeout(Duration::from_secs(5), reader.read(&mut buf)).await;
        assert_eq!(
            passed.ok().transpose()?,
            Some(small.len()),
            "a small record passes"
        );
        Ok(())
    }
}
