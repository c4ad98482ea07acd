//! The Internet checksum (RFC 1071), for the packets lb-ctl builds itself: VRRP adverts,
//! neighbour advertisements, the TCP segments of the via-VIP health check.

/// The Internet checksum (RFC 1071) of `parts`, concatenated (each part of even length except
/// possibly the last).
pub fn internet(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                None => odd = Some(b),
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_and_odd_lengths() {
        // RFC 1071's example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2, so the checksum is 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet(&[&data]), 0x220d);
        // Split into parts, the last odd: the same as one piece.
        assert_eq!(internet(&[&data[..4], &data[4..]]), 0x220d);
        assert_eq!(internet(&[&[0x12, 0x34, 0x56]]), !(0x1234u16 + 0x5600));
    }
}
