//! What would make a failed connection to a unix socket work, in words: for a permission
//! denied, the socket's owner, group and mode, and so the user or group that may connect; for a
//! missing socket or one nobody listens on, that the engine may not be running. Reads the
//! socket's metadata and, for names, `/etc/passwd` and `/etc/group` (bounded).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::bounded::{self, Limit};

/// The largest user or group database read for a name.
const MAX_DB_BYTES: u64 = 4 << 20;

/// The hint for `error` connecting to the socket at `path`, starting with `; `, or empty.
pub(super) fn socket(path: &Path, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::PermissionDenied => permission(path),
        io::ErrorKind::NotFound => "; the socket does not exist: is the engine running, and is \
             this its endpoint?"
            .to_string(),
        io::ErrorKind::ConnectionRefused => {
            "; nothing listens on the socket: is the engine running?".to_string()
        }
        _ => String::new(),
    }
}

/// Who may connect to the socket at `path`, and who we are.
fn permission(path: &Path) -> String {
    let me = rustix::process::geteuid().as_raw();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return format!(
                "; a directory on the path to the socket cannot be searched by uid {me}, which \
                 runs the cleaner: run it as root, or give it access to that directory"
            );
        }
        Err(_) => return String::new(),
    };
    let (uid, gid, mode) = (meta.uid(), meta.gid(), meta.mode() & 0o777);
    let owner = name_of(Path::new("/etc/passwd"), uid).unwrap_or_else(|| uid.to_string());
    let group = name_of(Path::new("/etc/group"), gid).unwrap_or_else(|| gid.to_string());
    let users = if uid == 0 {
        "root".to_string()
    } else {
        format!("root or {owner}")
    };
    let who = if mode & 0o020 != 0 {
        format!("run it as {users}, or as a member of group {group}")
    } else {
        format!("only {users} may connect")
    };
    format!(
        "; the socket is owned by {owner}:{group} with mode {mode:04o}, and uid {me} runs the \
         cleaner: {who}"
    )
}

/// The name of id `id` in a `name:x:id:…` database (`/etc/passwd`, `/etc/group`), if listed.
fn name_of(db: &Path, id: u32) -> Option<String> {
    let bytes =
        bounded::read_file("user or group database", db, Limit::bytes(MAX_DB_BYTES)).ok()?;
    name_in(&String::from_utf8_lossy(&bytes), id)
}

fn name_in(text: &str, id: u32) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let listed: u32 = fields.nth(1)?.parse().ok()?;
        (listed == id && !name.is_empty()).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_by_id() {
        let db = "root:x:0:\n# comment\ndocker:x:998:alice,bob\nbroken\n";
        assert_eq!(name_in(db, 998).as_deref(), Some("docker"));
        assert_eq!(name_in(db, 0).as_deref(), Some("root"));
        assert_eq!(name_in(db, 5), None);
    }

    #[test]
    fn each_failure_gets_its_hint() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("docker.sock");
        let hint = socket(&missing, &io::Error::from(io::ErrorKind::NotFound));
        assert!(hint.contains("does not exist"), "{hint}");
        let hint = socket(&missing, &io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(hint.contains("nothing listens"), "{hint}");
        let file = dir.path().join("sock");
        std::fs::write(&file, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o660)).unwrap();
        let hint = socket(&file, &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(
            hint.contains("with mode 0660") && hint.contains("or as a member of group"),
            "{hint}"
        );
    }
}
