//! Screenshots: qemu and libvirt hand out the screen as a PPM (P6) image; users and
//! browsers want PNG.

use std::io::BufWriter;
use std::path::Path;

use crate::GuestError;

/// The first bytes of every PNG file.
pub const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Converts a binary PPM (P6, maxval 255) to a PNG file.
pub fn ppm_to_png(ppm: &[u8], png_path: &Path) -> Result<(), GuestError> {
    let (width, height, pixels) = parse_ppm(ppm)?;
    let file = std::fs::File::create(png_path)
        .map_err(|source| GuestError::Io { what: format!("cannot create {}", png_path.display()), source })?;
    let mut enc = png::Encoder::new(BufWriter::new(file), width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let bad = |e: png::EncodingError| GuestError::Screenshot(format!("cannot write {}: {e}", png_path.display()));
    let mut w = enc.write_header().map_err(bad)?;
    w.write_image_data(pixels).map_err(bad)?;
    w.finish().map_err(bad)
}

/// Width, height and the RGB bytes of a P6 image.
fn parse_ppm(data: &[u8]) -> Result<(u32, u32, &[u8]), GuestError> {
    let bad = |why: &str| GuestError::Screenshot(format!("the screendump is not a PPM image: {why}"));
    let mut pos = 0;
    // Header: "P6", width, height, maxval, separated by whitespace (and # comments),
    // then exactly one whitespace byte before the pixels.
    let mut fields = Vec::with_capacity(4);
    while fields.len() < 4 {
        while pos < data.len() && (data[pos].is_ascii_whitespace() || data[pos] == b'#') {
            if data[pos] == b'#' {
                while pos < data.len() && data[pos] != b'\n' {
                    pos += 1;
                }
            } else {
                pos += 1;
            }
        }
        let start = pos;
        while pos < data.len() && !data[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if start == pos {
            return Err(bad("truncated header"));
        }
        fields.push(std::str::from_utf8(&data[start..pos]).map_err(|_| bad("binary header"))?);
    }
    if fields[0] != "P6" {
        return Err(bad("not P6"));
    }
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad("bad number"));
    let (w, h, max) = (num(fields[1])?, num(fields[2])?, num(fields[3])?);
    if max != 255 {
        return Err(bad("maxval is not 255"));
    }
    pos += 1;
    let len = (w as usize) * (h as usize) * 3;
    let pixels = data.get(pos..pos + len).ok_or_else(|| bad("truncated pixels"))?;
    if w == 0 || h == 0 {
        return Err(bad("empty image"));
    }
    Ok((w, h, pixels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_a_ppm() {
        let mut ppm = b"P6\n# made by a test\n2 1\n255\n".to_vec();
        ppm.extend_from_slice(&[255, 0, 0, 0, 0, 255]);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("s.png");
        ppm_to_png(&ppm, &out).unwrap();
        let dec = png::Decoder::new(std::fs::File::open(&out).unwrap());
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (2, 1));
        assert_eq!(&buf[..6], &[255, 0, 0, 0, 0, 255]);
        assert!(ppm_to_png(b"P5\n1 1\n255\n\0", &out).is_err());
        assert!(ppm_to_png(b"P6\n4 4\n255\n\0\0\0", &out).is_err());
    }
}
