//! Token facts to the text Sysmon reports: integrity levels, users, logon ids, process GUIDs.

use alloc::string::String;

use crate::text::{self, NoMemory};

/// `SECURITY_MANDATORY_LOW_RID`.
pub const LOW_RID: u32 = 0x1000;
/// `SECURITY_MANDATORY_MEDIUM_RID`.
pub const MEDIUM_RID: u32 = 0x2000;
/// `SECURITY_MANDATORY_MEDIUM_PLUS_RID`.
pub const MEDIUM_PLUS_RID: u32 = 0x2100;
/// `SECURITY_MANDATORY_HIGH_RID`.
pub const HIGH_RID: u32 = 0x3000;
/// `SECURITY_MANDATORY_SYSTEM_RID`.
pub const SYSTEM_RID: u32 = 0x4000;
/// `SECURITY_MANDATORY_PROTECTED_PROCESS_RID`.
pub const PROTECTED_RID: u32 = 0x5000;

/// The `IntegrityLevel` text for a token's mandatory label RID, as Sysmon writes it. An
/// AppContainer token reports `AppContainer` whatever its (low) RID.
pub fn integrity_level(rid: u32, app_container: bool) -> &'static str {
    if app_container {
        return "AppContainer";
    }
    match rid {
        r if r < LOW_RID => "Untrusted",
        r if r < MEDIUM_RID => "Low",
        r if r < HIGH_RID => "Medium",
        r if r < SYSTEM_RID => "High",
        r if r < PROTECTED_RID => "System",
        _ => "Protected",
    }
}

/// A security identifier, as the kernel hands it over (`SID` structure fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sid<'a> {
    /// `Revision` (always 1).
    pub revision: u8,
    /// `IdentifierAuthority`, big-endian 48-bit.
    pub authority: [u8; 6],
    /// `SubAuthority[..SubAuthorityCount]` (at most 15).
    pub sub_authorities: &'a [u32],
}

/// The most sub-authorities a SID may have (`SID_MAX_SUB_AUTHORITIES`).
pub const MAX_SUB_AUTHORITIES: usize = 15;

impl Sid<'_> {
    /// Writes the `S-1-5-21-...` form into `out`. A SID with more than 15 sub-authorities is
    /// malformed: `Ok(false)`, `out` empty.
    pub fn write_string(&self, out: &mut String) -> Result<bool, NoMemory> {
        out.clear();
        if self.sub_authorities.len() > MAX_SUB_AUTHORITIES {
            return Ok(false);
        }
        let authority = self
            .authority
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        // "S-255-" + a 14-byte authority + 15 times "-4294967295": 185 bytes at most.
        text::reserve(out, 192)?;
        text::write(out, format_args!("S-{}-", self.revision))?;
        if authority >= 1 << 32 {
            text::write(out, format_args!("0x{authority:012X}"))?;
        } else {
            text::write(out, format_args!("{authority}"))?;
        }
        for s in self.sub_authorities {
            text::write(out, format_args!("-{s}"))?;
        }
        Ok(true)
    }

    /// The `User` text: the well-known service accounts by name, as Sysmon writes them (rules match
    /// `NT AUTHORITY\SYSTEM` and its localised forms with `AUTHORI`/`AUTORI`), any other SID in
    /// string form (the Windows layer replaces it with `DOMAIN\name` when it can look it up).
    /// `Ok(false)` for a malformed SID.
    pub fn user_name(&self, out: &mut String) -> Result<bool, NoMemory> {
        let nt_authority = self.authority == [0, 0, 0, 0, 0, 5];
        let well_known = match (nt_authority, self.sub_authorities) {
            (true, [18]) => Some("NT AUTHORITY\\SYSTEM"),
            (true, [19]) => Some("NT AUTHORITY\\LOCAL SERVICE"),
            (true, [20]) => Some("NT AUTHORITY\\NETWORK SERVICE"),
            _ => None,
        };
        match well_known {
            Some(name) => {
                out.clear();
                text::push_str(out, name)?;
                Ok(true)
            }
            None => self.write_string(out),
        }
    }
}

/// The `LogonId` text: the logon session LUID in lower-case hex, as Sysmon writes it (`0x3e7`).
pub fn logon_id(luid: u64, out: &mut String) -> Result<(), NoMemory> {
    out.clear();
    text::write(out, format_args!("0x{luid:x}"))
}

/// A Sysmon-style process GUID, `{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}`: stable for one process
/// (process id and creation time), distinct across boots through `boot_salt`.
pub fn process_guid(
    boot_salt: u64,
    process_id: u32,
    create_time: u64,
    out: &mut String,
) -> Result<(), NoMemory> {
    // Two rounds of SplitMix64 over the inputs: not cryptographic, only well spread.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let a = mix(boot_salt ^ mix(u64::from(process_id)));
    let b = mix(a ^ create_time);
    out.clear();
    text::write(
        out,
        format_args!(
            "{{{:08X}-{:04X}-{:04X}-{:04X}-{:012X}}}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            a as u16,
            (b >> 48) as u16,
            b & 0xFFFF_FFFF_FFFF
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_levels_match_sysmon() {
        assert_eq!(integrity_level(0, false), "Untrusted");
        assert_eq!(integrity_level(LOW_RID, false), "Low");
        assert_eq!(integrity_level(MEDIUM_RID, false), "Medium");
        assert_eq!(integrity_level(MEDIUM_PLUS_RID, false), "Medium");
        assert_eq!(integrity_level(HIGH_RID, false), "High");
        assert_eq!(integrity_level(SYSTEM_RID, false), "System");
        assert_eq!(integrity_level(PROTECTED_RID, false), "Protected");
        assert_eq!(integrity_level(LOW_RID, true), "AppContainer");
    }

    #[test]
    fn sids_format_like_windows() {
        let mut s = String::new();
        let system = Sid {
            revision: 1,
            authority: [0, 0, 0, 0, 0, 5],
            sub_authorities: &[18],
        };
        assert!(system.write_string(&mut s).unwrap());
        assert_eq!(s, "S-1-5-18");
        assert!(system.user_name(&mut s).unwrap());
        assert_eq!(s, "NT AUTHORITY\\SYSTEM");
        let user = Sid {
            revision: 1,
            authority: [0, 0, 0, 0, 0, 5],
            sub_authorities: &[21, 3_623_811_015, 3_361_044_348, 30_300_820, 1013],
        };
        assert!(user.user_name(&mut s).unwrap());
        assert_eq!(s, "S-1-5-21-3623811015-3361044348-30300820-1013");
        let big = Sid {
            revision: 1,
            authority: [1, 0, 0, 0, 0, 0],
            sub_authorities: &[],
        };
        assert!(big.write_string(&mut s).unwrap());
        assert_eq!(s, "S-1-0x010000000000");
        let too_many = [1u32; 16];
        let bad = Sid {
            revision: 1,
            authority: [0, 0, 0, 0, 0, 5],
            sub_authorities: &too_many,
        };
        assert_eq!(bad.write_string(&mut s), Ok(false));
        assert_eq!(s, "");
    }

    #[test]
    fn logon_ids_and_guids() {
        let mut s = String::new();
        logon_id(0x3e7, &mut s).unwrap();
        assert_eq!(s, "0x3e7");
        process_guid(7, 4242, 133_000_000_000_000_000, &mut s).unwrap();
        assert_eq!(s.len(), 38);
        assert!(s.starts_with('{') && s.ends_with('}'));
        let mut t = String::new();
        process_guid(7, 4242, 133_000_000_000_000_000, &mut t).unwrap();
        assert_eq!(s, t);
        process_guid(8, 4242, 133_000_000_000_000_000, &mut t).unwrap();
        assert_ne!(s, t);
        process_guid(7, 4242, 133_000_000_000_000_001, &mut t).unwrap();
        assert_ne!(s, t);
    }
}
