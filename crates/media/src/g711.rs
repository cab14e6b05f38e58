//! G.711 µ-law and A-law (ITU-T G.711), between 16-bit linear PCM and one byte per sample.
//!
//! Written out rather than taken from a crate: the algorithm is a few lines and the crates
//! that offer it are small and little used. The segment/mantissa arithmetic reproduces the
//! ITU tables (the classic reference implementation's values): decoding gives the middle of
//! each quantisation interval.

/// µ-law bias added before finding the segment (33 in 14-bit units, times 4).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude µ-law encodes before clipping.
const ULAW_CLIP: i32 = 32635;

/// Encodes one 16-bit sample as µ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut magnitude = i32::from(sample);
    let sign = if magnitude < 0 {
        magnitude = -magnitude;
        0x80
    } else {
        0
    };
    magnitude = magnitude.min(ULAW_CLIP) + ULAW_BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && magnitude & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Decodes one µ-law byte to a 16-bit sample.
pub fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    // At most 32124: always fits.
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// Encodes one 16-bit sample as A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    // A-law works on 13-bit magnitudes.
    let mut magnitude = i32::from(sample) >> 3;
    let mask: u8 = if magnitude >= 0 {
        0xD5
    } else {
        magnitude = -magnitude - 1;
        0x55
    };
    // Segment ends (13-bit) of the eight segments.
    const SEGMENT_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let Some(segment) = SEGMENT_END.iter().position(|&end| magnitude <= end) else {
        return 0x7F ^ mask;
    };
    let shift = if segment < 2 { 1 } else { segment };
    let value = ((segment as i32) << 4) | ((magnitude >> shift) & 0x0F);
    (value as u8) ^ mask
}

/// Decodes one A-law byte to a 16-bit sample.
pub fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let mut magnitude = i32::from(a & 0x0F) << 4;
    let segment = (a & 0x70) >> 4;
    match segment {
        0 => magnitude += 8,
        1 => magnitude += 0x108,
        _ => magnitude = (magnitude + 0x108) << (segment - 1),
    }
    // At most 32256: always fits.
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ulaw_known_bytes() {
        // Values of the G.711 µ-law table.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_ulaw(1000), 0xCE);
        assert_eq!(linear_to_ulaw(-1000), 0x4E);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0xCE), 988);
        assert_eq!(ulaw_to_linear(0xF0), 120);
    }

    #[test]
    fn alaw_known_bytes() {
        // Values of the G.711 A-law table.
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(linear_to_alaw(1000), 0xFA);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(alaw_to_linear(0xFA), 1008);
    }

    #[test]
    fn every_byte_decodes_to_a_value_that_encodes_back_to_it() {
        for byte in 0..=255u8 {
            let u = ulaw_to_linear(byte);
            // µ-law has two zeros (0xFF and 0x7F); both decode to 0, which encodes as 0xFF.
            if byte != 0x7F {
                assert_eq!(linear_to_ulaw(u), byte, "µ-law {byte:#04x} -> {u}");
            }
            let a = alaw_to_linear(byte);
            assert_eq!(linear_to_alaw(a), byte, "A-law {byte:#04x} -> {a}");
        }
    }

    #[test]
    fn round_trip_error_stays_within_half_a_quantisation_step() {
        for x in i16::MIN..=i16::MAX {
            let m = i32::from(x).abs();
            // µ-law: step is 8 << segment, and (|x| + 132) >= 128 << segment; clipping
            // above 32635 adds at most 32767 - 32124.
            let u = i32::from(ulaw_to_linear(linear_to_ulaw(x)));
            let u_bound = if m > ULAW_CLIP {
                32768 - 32124
            } else {
                (m + 132) / 32 + 1
            };
            assert!((u - i32::from(x)).abs() <= u_bound, "µ-law {x} -> {u}");
            // A-law: step is 16 << (segment - 1) above the first two segments.
            let a = i32::from(alaw_to_linear(linear_to_alaw(x)));
            let a_bound = (m / 32).max(8) + 8;
            assert!((a - i32::from(x)).abs() <= a_bound, "A-law {x} -> {a}");
        }
    }
}
