//! Frame builders for IPv6, extension headers and fragments of both families, beside
//! [`super::tcp_frame`]. Checksums are computed by etherparse for whole datagrams; splitting
//! into fragments and splicing in extension headers keeps every byte of the transport part.

use std::net::Ipv6Addr;

/// An Ethernet + IPv6 + TCP frame without payload; `flags` as for [`super::tcp_frame`].
pub fn tcp6_frame(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    flags: &str,
) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 1, 64240);
    let b = super::with_tcp_flags(b, flags);
    let mut v = Vec::with_capacity(74);
    b.write(&mut v, &[])
        .expect("a TCP frame without payload always fits");
    v
}

/// An Ethernet + IPv6 + UDP frame carrying `payload`.
pub fn udp6_frame(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1)
        .write(&mut v, payload)
        .expect("a UDP frame fits");
    v
}

/// An Ethernet + IPv4 + UDP frame carrying `payload`.
pub fn udp4_frame(
    macs: ([u8; 6], [u8; 6]),
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src.0, dst.0, 64)
        .udp(src.1, dst.1)
        .write(&mut v, payload)
        .expect("a UDP frame fits");
    v
}

/// IPv6 extension header types.
pub const HOP_BY_HOP: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const DEST_OPTS: u8 = 60;

/// An extension header to splice in: its type, and its bytes after the next-header and
/// length (or reserved) fields.
pub type Extension = (u8, Vec<u8>);

/// One extension header of `(len_units + 1) * 8` bytes: options padded with PadN, routing
/// data with nothing left to do.
pub fn extension(kind: u8, len_units: u8) -> Extension {
    // (len_units + 1) * 8 bytes in all, 2 of them the next-header and length fields.
    let total = (len_units as usize + 1) * 8;
    let mut body = vec![0u8; total - 2];
    match kind {
        HOP_BY_HOP | DEST_OPTS => {
            // One PadN option covering the rest.
            body[0] = 1;
            body[1] = (total - 4) as u8;
        }
        ROUTING => {
            // Type 4 (segment routing) with segments left 0: nothing for a router to do.
            body[0] = 4;
        }
        _ => {}
    }
    (kind, body)
}

/// `frame` (an untagged IPv6 frame) with `headers` spliced in between the fixed header and
/// the upper layer, chained in order; the payload length grows by their size.
pub fn with_extensions(frame: &[u8], headers: &[Extension]) -> Vec<u8> {
    let l3 = 14;
    let upper = frame[l3 + 6];
    let mut out = frame[..l3 + 40].to_vec();
    let mut ext = Vec::new();
    for (i, (kind, body)) in headers.iter().enumerate() {
        let next = headers.get(i + 1).map_or(upper, |(k, _)| *k);
        ext.push(next);
        if *kind == FRAGMENT {
            // A fragment header has a reserved byte where others have a length.
            ext.push(0);
        } else {
            ext.push(((body.len() + 2) / 8 - 1) as u8);
        }
        ext.extend_from_slice(body);
    }
    if let Some((first, _)) = headers.first() {
        out[l3 + 6] = *first;
    }
    let payload = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) as usize + ext.len();
    out[l3 + 4..l3 + 6].copy_from_slice(&(payload as u16).to_be_bytes());
    out.extend_from_slice(&ext);
    out.extend_from_slice(&frame[l3 + 40..]);
    out
}

/// The body of an IPv6 fragment header (after next header and reserved): offset in bytes (a
/// multiple of 8), more fragments, identification.
pub fn fragment_header(offset: usize, more: bool, id: u32) -> Extension {
    assert_eq!(offset % 8, 0, "fragment offsets are multiples of 8");
    let field = (offset as u16) | u16::from(more);
    let mut body = field.to_be_bytes().to_vec();
    body.extend_from_slice(&id.to_be_bytes());
    (FRAGMENT, body)
}

/// Splits an untagged IPv6 frame's payload into fragments of at most `chunk` bytes (a
/// multiple of 8) with identification `id`, as a host sending it would.
pub fn fragments_v6(frame: &[u8], id: u32, chunk: usize) -> Vec<Vec<u8>> {
    let l3 = 14;
    let payload = &frame[l3 + 40..];
    let upper = frame[l3 + 6];
    let mut out = Vec::new();
    for (i, part) in payload.chunks(chunk).enumerate() {
        let offset = i * chunk;
        let more = offset + part.len() < payload.len();
        let mut f = frame[..l3 + 40].to_vec();
        f[l3 + 6] = FRAGMENT;
        f[l3 + 4..l3 + 6].copy_from_slice(&((part.len() + 8) as u16).to_be_bytes());
        let (_, body) = fragment_header(offset, more, id);
        f.push(upper);
        f.push(0);
        f.extend_from_slice(&body);
        f.extend_from_slice(part);
        out.push(f);
    }
    out
}

/// Splits an untagged IPv4 frame (no options) into fragments of at most `chunk` payload
/// bytes (a multiple of 8) with identification `id`; header checksums recomputed.
pub fn fragments_v4(frame: &[u8], id: u16, chunk: usize) -> Vec<Vec<u8>> {
    let l3 = 14;
    assert_eq!(frame[l3] & 0x0f, 5, "no IPv4 options");
    let total = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) as usize;
    let payload = &frame[l3 + 20..l3 + total];
    let mut out = Vec::new();
    for (i, part) in payload.chunks(chunk).enumerate() {
        let offset = i * chunk;
        let more = offset + part.len() < payload.len();
        let mut f = frame[..l3 + 20].to_vec();
        f[l3 + 2..l3 + 4].copy_from_slice(&((20 + part.len()) as u16).to_be_bytes());
        f[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
        let field = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        f[l3 + 6..l3 + 8].copy_from_slice(&field.to_be_bytes());
        set_ipv4_checksum(&mut f[l3..l3 + 20]);
        f.extend_from_slice(part);
        out.push(f);
    }
    out
}

fn set_ipv4_checksum(h: &mut [u8]) {
    h[10] = 0;
    h[11] = 0;
    let mut sum: u32 = h
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}
