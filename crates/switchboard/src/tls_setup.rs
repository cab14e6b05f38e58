//! The TLS certificate `serve` presents when `[tls]` names none, made so that phones can
//! be told to trust it: it names every host name and address the server is reached by,
//! it is written beside the database (`switchboard-tls.crt`, and its key in
//! `switchboard-tls.key`, readable by its owner only), and it is kept across restarts,
//! made again only when it no longer covers those names. A phone given that file
//! (`switchboard phone --ca FILE`, baresip's `sip_cafile`, ...) then accepts the server
//! at any of them.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The certificate's file name, in the database's folder.
pub const CERT_FILE: &str = "switchboard-tls.crt";
/// The private key's file name, beside it.
pub const KEY_FILE: &str = "switchboard-tls.key";

/// The names a self-signed certificate must cover, in order and without repeats: the
/// domain, the aliases, `localhost`, and every address listened on. A wildcard listener
/// (0.0.0.0, [::]) is reached at any address of the host: `host_addrs` and the loopback
/// addresses (an IPv4 wildcard takes IPv4 addresses only; [::] takes both, as on a
/// dual-stack host). IPv6 link-local addresses are left out: they need a zone to be used.
pub fn certificate_names(
    domain: &str,
    aliases: &[String],
    listen_ips: &[IpAddr],
    host_addrs: &[IpAddr],
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: String| {
        if !name.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
            names.push(name);
        }
    };
    let host = |text: &str| {
        let t = text.trim();
        let bare = t
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(t);
        // An address is written the one way rustls compares it.
        bare.parse::<IpAddr>().map_or_else(
            |_| bare.trim_end_matches('.').to_owned(),
            |ip| ip.to_string(),
        )
    };
    add(host(domain));
    for alias in aliases {
        add(host(alias));
    }
    add("localhost".into());
    let loopbacks = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    for ip in listen_ips {
        if ip.is_unspecified() {
            let both = ip.is_ipv6();
            for h in loopbacks.iter().chain(host_addrs) {
                let link_local = matches!(h, IpAddr::V6(v6) if v6.is_unicast_link_local());
                if (both || h.is_ipv4()) && !h.is_unspecified() && !link_local {
                    add(h.to_string());
                }
            }
        } else {
            add(ip.to_string());
        }
    }
    names
}

/// The addresses of this host's interfaces (IPv4 and IPv6); empty if they cannot be read.
pub fn host_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut addrs = Vec::new();
    for ifa in interfaces {
        let Some(address) = ifa.address else { continue };
        if let Some(v4) = address.as_sockaddr_in() {
            addrs.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            addrs.push(IpAddr::V6(v6.ip()));
        }
    }
    addrs
}

/// The folder the certificate goes in: the SQLite file's, or the working directory for a
/// database that is not a file. Absolute, so that the log names a file one can open.
pub fn folder_for(database: &str) -> PathBuf {
    let folder = match store::Backend::parse(database) {
        Ok(store::Backend::Sqlite(file)) => file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_owned),
        _ => PathBuf::from("."),
    };
    std::path::absolute(&folder).unwrap_or(folder)
}

/// The certificate in use, and whether it was made now.
pub struct SelfSignedFiles {
    /// What the TLS listeners present.
    pub server_config: Arc<rustls::ServerConfig>,
    /// The certificate file, for phones to trust.
    pub cert_path: PathBuf,
    /// `None` when the files were there and fit; else why a new one was made.
    pub made_because: Option<String>,
}

/// Loads the certificate and key in `folder` if they cover every name of `names`, else
/// makes a new pair and writes it there (the key readable by its owner only).
pub fn load_or_make(folder: &Path, names: &[String]) -> Result<SelfSignedFiles, String> {
    let cert_path = folder.join(CERT_FILE);
    let key_path = folder.join(KEY_FILE);
    let made_because = match reuse(&cert_path, &key_path, names) {
        Ok(server_config) => {
            return Ok(SelfSignedFiles {
                server_config,
                cert_path,
                made_because: None,
            });
        }
        Err(why) => why,
    };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let made = sip_net::tls::self_signed(&refs).map_err(|e| e.to_string())?;
    // The key first: a certificate on disk always has its key beside it.
    write_replacing(&key_path, made.key_pem.as_bytes(), 0o600)?;
    write_replacing(&cert_path, made.cert_pem.as_bytes(), 0o644)?;
    Ok(SelfSignedFiles {
        server_config: made.server_config,
        cert_path,
        made_because: Some(made_because),
    })
}

/// The configuration from the files when they are there, match, and cover every name;
/// else why not.
fn reuse(
    cert_path: &Path,
    key_path: &Path,
    names: &[String],
) -> Result<Arc<rustls::ServerConfig>, String> {
    if !cert_path.exists() && !key_path.exists() {
        return Err("there was none".into());
    }
    let server_config = sip_net::tls::server_config_from_pem_files(cert_path, key_path)
        .map_err(|e| e.to_string())?;
    let cert = CertificateDer::from_pem_file(cert_path)
        .map_err(|e| format!("cannot read {}: {e}", cert_path.display()))?;
    for name in names {
        sip_net::tls::check_self_signed_for(&cert, name)
            .map_err(|e| format!("the one there does not serve {name} ({e})"))?;
    }
    Ok(server_config)
}

/// Writes `bytes` to `path` through a temporary file renamed over it, so that a reader
/// never sees half a file, created with `mode`.
fn write_replacing(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    // A leftover from an interrupted run may have another mode.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(failed)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn names_cover_domain_aliases_and_every_listening_address() {
        let host = ips(&["127.0.0.1", "192.0.2.10", "::1", "2001:db8::10", "fe80::1"]);
        assert_eq!(
            certificate_names(
                "sip.example.test",
                &[
                    "pbx.example.test".into(),
                    "[::1]".into(),
                    "SIP.example.test".into()
                ],
                &ips(&["192.0.2.10", "198.51.100.7", "192.0.2.10"]),
                &host,
            ),
            [
                "sip.example.test",
                "pbx.example.test",
                "::1",
                "localhost",
                "192.0.2.10",
                "198.51.100.7"
            ]
        );
        // 0.0.0.0: the host's IPv4 addresses, loopback included.
        assert_eq!(
            certificate_names("localhost", &[], &ips(&["0.0.0.0"]), &host),
            ["localhost", "127.0.0.1", "192.0.2.10"]
        );
        // [::]: both families, but no link-local address; loopbacks even when the host
        // list is empty.
        assert_eq!(
            certificate_names("example.test", &[], &ips(&["::"]), &host),
            [
                "example.test",
                "localhost",
                "127.0.0.1",
                "::1",
                "192.0.2.10",
                "2001:db8::10"
            ]
        );
        assert_eq!(
            certificate_names("127.0.0.1", &[], &ips(&["::"]), &[]),
            ["127.0.0.1", "localhost", "::1"]
        );
    }

    #[test]
    fn the_certificate_is_kept_while_it_fits_and_made_again_when_not() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = vec!["example.test".into(), "127.0.0.1".into()];
        let first = load_or_make(dir.path(), &names).unwrap();
        assert_eq!(first.cert_path, dir.path().join(CERT_FILE));
        assert_eq!(first.made_because.as_deref(), Some("there was none"));
        let cert = std::fs::read(dir.path().join(CERT_FILE)).unwrap();
        let key_mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);

        let again = load_or_make(dir.path(), &names).unwrap();
        assert_eq!(again.made_because, None);
        assert_eq!(std::fs::read(dir.path().join(CERT_FILE)).unwrap(), cert);

        // A new address: made again, covering it.
        let more: Vec<String> = vec!["example.test".into(), "127.0.0.1".into(), "::1".into()];
        let remade = load_or_make(dir.path(), &more).unwrap();
        let why = remade.made_because.unwrap();
        assert!(why.contains("does not serve ::1"), "{why}");
        let new_cert = std::fs::read(dir.path().join(CERT_FILE)).unwrap();
        assert_ne!(new_cert, cert);
        let der = CertificateDer::from_pem_slice(&new_cert).unwrap();
        for name in &more {
            sip_net::tls::check_self_signed_for(&der, name).unwrap();
        }

        // A key that is not the certificate's: made again.
        let other = sip_net::tls::self_signed(&["example.test"]).unwrap();
        std::fs::write(dir.path().join(KEY_FILE), other.key_pem).unwrap();
        assert!(
            load_or_make(dir.path(), &more)
                .unwrap()
                .made_because
                .is_some()
        );
        assert_eq!(load_or_make(dir.path(), &more).unwrap().made_because, None);
    }

    #[test]
    fn the_folder_is_the_database_one() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(folder_for("/var/lib/sb/sb.db"), Path::new("/var/lib/sb"));
        assert_eq!(folder_for("sqlite:///var/lib/sb.db"), Path::new("/var/lib"));
        assert_eq!(folder_for("switchboard.db"), cwd);
        assert_eq!(folder_for("data/sb.db"), cwd.join("data"));
        assert_eq!(folder_for("memory:"), cwd);
    }
}
