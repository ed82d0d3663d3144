//! The build key: 32 bytes that stand in for every choice a build would otherwise make
//! at random, so the same key (with the same template and mirror state) makes the same
//! image.
//!
//! The key is the request's `build_key` parameter (64 hex digits) when the host gives
//! one, or else the SHA-256 of the template and the build's source state
//! ([`crate::state`]). Each value a build needs is a SHA-256 of the key and a name for
//! its purpose, so no two purposes share bytes: the root file system's UUID and its
//! directory hash seed, the MBR's disk identifier, the salt of the root password's hash.
//!
//! The derived key leaves the template's root password out: the UUID is on every copy
//! of the image, and a key made from the password would let anyone holding an image and
//! its template test guesses of the password at SHA-256 speed, past the slow SHA-512
//! crypt that /etc/shadow uses to resist exactly that.

use diskimage::DiskError;
use imagefactory_plugin_api::prelude::Parameters;

use crate::digest;
use crate::error::DebianError;

/// The request parameter that gives the key.
pub const PARAMETER: &str = "build_key";

/// What separates the derivation's inputs from other uses of SHA-256 (and a later
/// change of the derivation from this one).
const DERIVATION: &str = "imagefactory debian build key v1";

/// See the module documentation.
#[derive(Clone, PartialEq, Eq)]
pub struct BuildKey([u8; 32]);

impl std::fmt::Debug for BuildKey {
    /// Only a prefix: enough to tell keys apart in a log, never the whole key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BuildKey({}...)", &digest::hex(&self.0)[..8])
    }
}

impl BuildKey {
    /// A key written as 64 hex digits.
    pub fn from_hex(text: &str) -> Result<BuildKey, DebianError> {
        let bad = || DebianError::BadBuildKey(format!("{} characters that are not all hex digit pairs", text.len()));
        let bytes = digest::from_hex(text.trim()).ok_or_else(bad)?;
        <[u8; 32]>::try_from(bytes)
            .map(BuildKey)
            .map_err(|b| DebianError::BadBuildKey(format!("{} bytes, not 32", b.len())))
    }

    /// The request's `build_key`, if it has one (a value that is not a string is an
    /// error rather than ignored: the caller asked for a reproducible build).
    pub fn from_parameters(parameters: &Parameters) -> Result<Option<BuildKey>, DebianError> {
        match parameters.get(PARAMETER) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                Some(s) => BuildKey::from_hex(s).map(Some),
                None => Err(DebianError::BadBuildKey("not a string".into())),
            },
        }
    }

    /// The key of a build of `template_xml` (root password left out) from the suite
    /// files `state` names (URL and digest, as [`crate::state::source_state`] gives).
    pub fn derive(template_xml: &str, state: &[(String, String)]) -> Result<BuildKey, DebianError> {
        let mut input = format!("{DERIVATION}\0{}\0", without_root_password(template_xml));
        for (url, digest) in state {
            input.push_str(&format!("{url}\0{digest}\0"));
        }
        Ok(BuildKey(digest::sha256(input.as_bytes())?))
    }

    /// The key as 64 hex digits.
    pub fn hex(&self) -> String {
        digest::hex(&self.0)
    }

    /// 32 bytes for `purpose`, independent of every other purpose's.
    pub fn bytes_for(&self, purpose: &str) -> Result<[u8; 32], DiskError> {
        let mut input = format!("{DERIVATION}\0{purpose}\0").into_bytes();
        input.extend_from_slice(&self.0);
        digest::sha256(&input)
    }

    /// A UUID for `purpose`, in the form of a random (version 4) UUID.
    pub fn uuid(&self, purpose: &str) -> Result<String, DiskError> {
        Ok(v4_uuid(&self.bytes_for(purpose)?))
    }

    /// The MBR disk identifier (never 0, which some tools read as "none").
    pub fn disk_id(&self) -> Result<u32, DiskError> {
        let b = self.bytes_for("mbr disk identifier")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]).max(1))
    }

    /// A salt for SHA-512 crypt: 16 characters of crypt's alphabet.
    pub fn crypt_salt(&self) -> Result<String, DiskError> {
        Ok(crypt_salt(&self.bytes_for("root password salt")?))
    }
}

/// The UUID text of the first 16 `bytes`, with the version (4) and variant (RFC 4122)
/// bits set as a random UUID has them.
pub fn v4_uuid(bytes: &[u8; 32]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    diskimage::ext4::format_uuid(&b)
}

/// crypt(3)'s salt alphabet: 64 characters, so each byte maps to one without bias.
const SALT_ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The 16-character SHA-512 crypt salt of `bytes`.
pub fn crypt_salt(bytes: &[u8; 32]) -> String {
    bytes[..16].iter().map(|b| SALT_ALPHABET[usize::from(b % 64)] as char).collect()
}

/// The template with the text of each `<rootpw>` element removed (`<rootpw/>`,
/// `<rootpwx>` and the rest left as they are).
pub fn without_root_password(xml: &str) -> String {
    const OPEN: &str = "<rootpw";
    const CLOSE: &str = "</rootpw>";
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(at) = rest.find(OPEN) {
        let after = &rest[at + OPEN.len()..];
        let Some(gt) = after.find('>') else { break };
        let tag_end = at + OPEN.len() + gt + 1;
        let is_element = after.starts_with(|c: char| c == '>' || c.is_whitespace());
        out.push_str(&rest[..tag_end]);
        rest = &rest[tag_end..];
        if is_element && !out.ends_with("/>") {
            match rest.find(CLOSE) {
                Some(close) => rest = &rest[close..],
                None => rest = "",
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn keys_from_parameters() {
        let mut p = Parameters::new();
        assert_eq!(BuildKey::from_parameters(&p).unwrap(), None);
        p.insert(PARAMETER.into(), KEY.to_uppercase().into());
        assert_eq!(BuildKey::from_parameters(&p).unwrap().unwrap().hex(), KEY);
        p.insert(PARAMETER.into(), "abcd".into());
        let e = BuildKey::from_parameters(&p).unwrap_err().to_string();
        assert!(e.starts_with("the build_key parameter must be 64 hex digits (32 bytes): got 2 bytes"), "{e}");
        p.insert(PARAMETER.into(), "xyz".into());
        assert!(BuildKey::from_parameters(&p).is_err());
        p.insert(PARAMETER.into(), 5.into());
        assert!(BuildKey::from_parameters(&p).unwrap_err().to_string().contains("not a string"));
        let k = BuildKey::from_hex(KEY).unwrap();
        assert!(!format!("{k:?}").contains(&KEY[8..]), "Debug shows the whole key");
    }

    #[test]
    fn derived_values_are_fixed_distinct_and_well_formed() {
        let k = BuildKey::from_hex(KEY).unwrap();
        let fs = k.uuid("ext4 uuid").unwrap();
        assert_eq!(fs, k.uuid("ext4 uuid").unwrap());
        assert_ne!(fs, k.uuid("ext4 hash seed").unwrap());
        assert_eq!(fs.len(), 36);
        assert_eq!(&fs[14..15], "4", "version 4: {fs}");
        assert!("89ab".contains(&fs[19..20]), "RFC 4122 variant: {fs}");
        let salt = k.crypt_salt().unwrap();
        assert_eq!(salt.len(), 16);
        assert!(salt.bytes().all(|c| SALT_ALPHABET.contains(&c)), "{salt}");
        assert_ne!(k.disk_id().unwrap(), 0);
        let other = BuildKey::from_hex(&KEY.replace("00", "01")).unwrap();
        assert_ne!(other.uuid("ext4 uuid").unwrap(), fs);
        assert_ne!(other.crypt_salt().unwrap(), salt);
    }

    #[test]
    fn uuid_bits_and_salt_mapping() {
        let mut b = [0xffu8; 32];
        assert_eq!(v4_uuid(&b), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        b = [0; 32];
        assert_eq!(v4_uuid(&b), "00000000-0000-4000-8000-000000000000");
        assert_eq!(crypt_salt(&b), "................");
        b[0] = 63;
        b[1] = 64;
        assert_eq!(&crypt_salt(&b)[..2], "z.");
    }

    #[test]
    fn the_derived_key_follows_template_and_state_but_not_the_password() {
        let state = vec![("http://m.example/debian/dists/bookworm/InRelease".to_string(), "sha256:aa".to_string())];
        let t = |pw: &str| format!("<template><os><rootpw>{pw}</rootpw></os><name>x</name></template>");
        let a = BuildKey::derive(&t("one"), &state).unwrap();
        assert_eq!(a, BuildKey::derive(&t("two"), &state).unwrap(), "the password changed the key");
        assert_ne!(a, BuildKey::derive(&t("one").replace("<name>x", "<name>y"), &state).unwrap());
        let later = vec![(state[0].0.clone(), "sha256:bb".to_string())];
        assert_ne!(a, BuildKey::derive(&t("one"), &later).unwrap());
        assert_ne!(a, BuildKey::derive(&t("one"), &[]).unwrap());
    }

    #[test]
    fn root_passwords_are_cut_out_of_the_text() {
        assert_eq!(
            without_root_password(
                "<os><rootpw>s3cr3t</rootpw><rootpwx>keep</rootpwx><rootpw/><rootpw a='1'>b</rootpw></os>"
            ),
            "<os><rootpw></rootpw><rootpwx>keep</rootpwx><rootpw/><rootpw a='1'></rootpw></os>"
        );
        assert_eq!(without_root_password("<template/>"), "<template/>");
        assert_eq!(without_root_password("<rootpw>unclosed"), "<rootpw>");
    }
}
