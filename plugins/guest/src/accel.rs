//! Which accelerator runs the guest.
//!
//! A setting, never probed: on some hosts `/dev/kvm` opens and qemu reports KVM enabled,
//! yet guests hang or abort (a paravirtual KVM), so only the operator can say "kvm".

use std::fmt;
use std::str::FromStr;

use crate::GuestError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization: production hosts.
    Kvm,
    /// Software emulation: slower, works everywhere (and is what tests use).
    #[default]
    Tcg,
}

impl Accel {
    /// The value of qemu's `-machine accel=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// The `-cpu` model: the host's CPU under KVM; qemu's default under TCG, where
    /// emulating a bigger CPU model only costs time.
    pub fn cpu(self) -> Option<&'static str> {
        match self {
            Accel::Kvm => Some("host"),
            Accel::Tcg => None,
        }
    }
}

impl FromStr for Accel {
    type Err = GuestError;

    fn from_str(s: &str) -> Result<Accel, GuestError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(GuestError::UnknownAccel(other.to_string())),
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_default() {
        assert_eq!(Accel::default(), Accel::Tcg);
        assert_eq!("KVM".parse::<Accel>().unwrap(), Accel::Kvm);
        assert_eq!(" tcg ".parse::<Accel>().unwrap(), Accel::Tcg);
        assert_eq!("hvf".parse::<Accel>().unwrap_err().to_string(), "unknown accelerator 'hvf' (use kvm or tcg)");
        assert_eq!(Accel::Tcg.cpu(), None);
    }
}
