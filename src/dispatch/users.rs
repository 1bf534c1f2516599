//! Operators and sign-in: a local users file with hashed passphrases.
//!
//! A person signs in at start against a TOML users file; every later event records
//! who. The file holds one `[[user]]` table per person:
//!
//! ```toml
//! [[user]]
//! name = "li.wei"
//! display = "Li Wei 李伟"
//! role = "dispatcher"            # operator | dispatcher | leader | department_liaison
//! # department = "fire"          # required for department_liaison, refused otherwise
//! passphrase = "$argon2id$v=19$m=19456,t=2,p=1$...$..."
//! ```
//!
//! Passphrases are stored only as Argon2 PHC strings ([`hash_passphrase`],
//! [`add_user_line`]); a plain-text passphrase in the file is refused at load.

use std::io::Read;
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

use super::Role;

/// One person who may sign in. Carries no secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Sign-in name, unique in the file (`li.wei`).
    pub name: String,
    /// Name shown in the interface and the event log (`Li Wei 李伟`).
    pub display: String,
    pub role: Role,
    /// The department a [`Role::DepartmentLiaison`] acts for; `None` for other roles.
    pub department: Option<String>,
}

/// The users file, loaded and checked. `Debug` lists the people, never the hashes.
#[derive(Clone)]
pub struct Users {
    accounts: Vec<Account>,
}

#[derive(Clone)]
struct Account {
    user: User,
    /// A PHC string checked at load to parse as an Argon2 hash.
    hash: String,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.accounts.iter().map(|a| &a.user))
            .finish()
    }
}

/// Why a users file could not be loaded. Every variant names the file (and the user
/// where one is at fault); none ever repeats a passphrase.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    // The reason is in the message, not also a source (a chain would say it twice).
    #[error("cannot read users file {origin}: {error}")]
    Io {
        origin: String,
        error: std::io::Error,
    },
    #[error("users file {origin} is not valid TOML: {message}")]
    Toml { origin: String, message: String },
    #[error("users file {origin}, user {user:?}: {problem}")]
    User {
        origin: String,
        user: String,
        problem: String,
    },
    #[error("users file {origin}: user {user:?} appears more than once")]
    Duplicate { origin: String, user: String },
}

/// Why sign-in failed. Deliberately one answer for an unknown name and a wrong
/// passphrase, so the screen does not tell which names exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("unknown user or wrong passphrase")]
    BadCredentials,
}

/// The file as written, before checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    user: Vec<RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    display: Option<String>,
    role: String,
    department: Option<String>,
    passphrase: String,
}

/// How to make a hash, quoted by every "not a hash" error.
const HOW_TO_HASH: &str = "plain-text passphrases are not accepted: replace it with an \
     Argon2 PHC hash, e.g. by running `zhongshu users add <name> --role <role>` and \
     pasting the [[user]] block it prints";

impl Users {
    /// Reads and checks a users file.
    pub fn load(path: impl AsRef<Path>) -> Result<Users, UsersError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| UsersError::Io {
            origin: origin.clone(),
            error,
        })?;
        Users::parse(&text, &origin)
    }

    /// Checks a users file's text; `origin` names it in errors (a path, `demo`).
    pub fn parse(text: &str, origin: &str) -> Result<Users, UsersError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| UsersError::Toml {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let mut accounts: Vec<Account> = Vec::with_capacity(raw.user.len());
        for raw in raw.user {
            let problem = |problem: String| UsersError::User {
                origin: origin.to_owned(),
                user: raw.name.clone(),
                problem,
            };
            let user = check_user(
                &raw.name,
                raw.display.as_deref(),
                &raw.role,
                raw.department.as_deref(),
            )
            .map_err(problem)?;
            check_hash(&raw.passphrase).map_err(problem)?;
            if accounts.iter().any(|a| a.user.name == user.name) {
                return Err(UsersError::Duplicate {
                    origin: origin.to_owned(),
                    user: user.name,
                });
            }
            accounts.push(Account {
                user,
                hash: raw.passphrase,
            });
        }
        Ok(Users { accounts })
    }

    /// The demo accounts ([`DEMO_USERS`]); passphrase `zhongshu` for all.
    pub fn demo() -> Users {
        Users::parse(DEMO_USERS, "demo users").expect("the built-in demo users parse")
    }

    /// Checks a name and passphrase. Unknown names still cost one Argon2 verification,
    /// so timing does not tell names apart either; the hash comparison itself is
    /// constant-time in the `password-hash` crate.
    pub fn sign_in(&self, name: &str, passphrase: &str) -> Result<User, SignInError> {
        let account = self.accounts.iter().find(|a| a.user.name == name);
        let hash = account.map_or(DECOY_HASH, |a| a.hash.as_str());
        let verified = PasswordHash::new(hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(passphrase.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        match account {
            Some(account) if verified => Ok(account.user.clone()),
            _ => Err(SignInError::BadCredentials),
        }
    }

    /// The person named `name`, if in the file.
    pub fn get(&self, name: &str) -> Option<&User> {
        self.accounts
            .iter()
            .map(|a| &a.user)
            .find(|u| u.name == name)
    }

    /// Everyone, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.accounts.iter().map(|a| &a.user)
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }
}

fn role_names() -> String {
    Role::PEOPLE.map(Role::as_str).join(", ")
}

/// The checks on one user other than the passphrase, shared by load and add.
fn check_user(
    name: &str,
    display: Option<&str>,
    role: &str,
    department: Option<&str>,
) -> Result<User, String> {
    if name.trim().is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the name must be non-empty, without spaces".to_owned());
    }
    let role = Role::from_name(role)
        .ok_or_else(|| format!("unknown role {role:?}; expected one of {}", role_names()))?;
    if !Role::PEOPLE.contains(&role) {
        return Err(format!(
            "role {:?} is Zhongshu itself, no person signs in with it; expected one of {}",
            role.as_str(),
            role_names()
        ));
    }
    let department = department.map(str::trim);
    let department = match (role, department) {
        (Role::DepartmentLiaison, Some(d)) if !d.is_empty() => Some(d.to_owned()),
        (Role::DepartmentLiaison, _) => {
            return Err(
                "a department_liaison needs `department = \"...\"` (the department they act for)"
                    .to_owned(),
            );
        }
        (_, Some(_)) => {
            return Err(format!(
                "`department` is only for department_liaison, not {}",
                role.as_str()
            ));
        }
        (_, None) => None,
    };
    let display = display.map(str::trim).filter(|d| !d.is_empty());
    Ok(User {
        name: name.to_owned(),
        display: display.unwrap_or(name).to_owned(),
        role,
        department,
    })
}

/// Accepts only an Argon2 PHC string. Never echoes the value: it may be a plain
/// passphrase.
fn check_hash(passphrase: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(passphrase)
        .map_err(|_| format!("`passphrase` is not an Argon2 PHC hash; {HOW_TO_HASH}"))?;
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" if parsed.hash.is_some() && parsed.salt.is_some() => {}
        other => {
            return Err(format!(
                "`passphrase` is a {other:?} PHC string, not a complete Argon2 hash; {HOW_TO_HASH}"
            ));
        }
    }
    // A hash made with weak parameters is cheap to crack whatever the passphrase:
    // at least OWASP's minimum for Argon2 (19 MiB, 2 passes, 1 lane).
    let param = |name: &str| parsed.params.get_decimal(name).unwrap_or(0);
    let (m, t, p) = (param("m"), param("t"), param("p"));
    if m < MIN_ARGON2_M_KIB || t < MIN_ARGON2_T || p < 1 {
        return Err(format!(
            "`passphrase` was hashed with weak Argon2 parameters (m={m} KiB, t={t}, p={p}; at least m={MIN_ARGON2_M_KIB}, t={MIN_ARGON2_T}, p=1): hash it again with `zhongshu users add`"
        ));
    }
    Ok(())
}

/// The weakest Argon2 memory cost accepted, KiB (OWASP's minimum, the crate default).
const MIN_ARGON2_M_KIB: u32 = 19 * 1024;
/// The fewest Argon2 passes accepted.
const MIN_ARGON2_T: u32 = 2;

/// Hashes a passphrase as an Argon2id PHC string (default parameters, random salt).
pub fn hash_passphrase(passphrase: &str) -> String {
    let salt = SaltString::encode_b64(&random_salt()).expect("16 bytes is a valid salt length");
    Argon2::default()
        .hash_password(passphrase.as_bytes(), &salt)
        .expect("Argon2 with default parameters hashes any passphrase")
        .to_string()
}

/// 16 random bytes for a salt. `rand_core` is built here without its `getrandom`
/// feature (so `OsRng` is not available), hence the OS source is read directly; a salt
/// must be unique, not secret, so where no such file exists the per-process random
/// keys of std's `RandomState` mixed with the clock and a counter suffice.
fn random_salt() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let from_os = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !from_os {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for half in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(nanos);
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes
}

/// The `[[user]]` block to append to a users file, for `zhongshu users add`. The
/// passphrase is hashed here; the same checks as [`Users::parse`] apply (a
/// department_liaison needs a department, other roles take none). Duplicate names can
/// only be seen against the file: parse the file with the block appended before
/// writing it.
pub fn add_user_line(
    name: &str,
    display: &str,
    role: Role,
    department: Option<&str>,
    passphrase: &str,
) -> Result<String, UsersError> {
    let user = check_user(name, Some(display), role.as_str(), department).map_err(|problem| {
        UsersError::User {
            origin: "new user".to_owned(),
            user: name.to_owned(),
            problem,
        }
    })?;
    #[derive(Serialize)]
    struct Block<'a> {
        user: [Entry<'a>; 1],
    }
    #[derive(Serialize)]
    struct Entry<'a> {
        name: &'a str,
        display: &'a str,
        role: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        department: Option<&'a str>,
        passphrase: String,
    }
    let block = Block {
        user: [Entry {
            name: &user.name,
            display: &user.display,
            role: user.role.as_str(),
            department: user.department.as_deref(),
            passphrase: hash_passphrase(passphrase),
        }],
    };
    Ok(toml::to_string(&block).expect("a users block serializes"))
}

/// Demo accounts for the out-of-the-box demo city, one per role. **Demo only**: every
/// passphrase is `zhongshu`, published here; never deploy these.
///
/// | name           | role               | department |
/// |----------------|--------------------|------------|
/// | `duty`         | operator           |            |
/// | `dispatch`     | dispatcher         |            |
/// | `leader`       | leader             |            |
/// | `fire.liaison` | department_liaison | `fire`     |
pub const DEMO_USERS: &str = r#"# Demo accounts, demo only: the passphrase of every account is "zhongshu".
[[user]]
name = "duty"
display = "Duty Operator 值班员"
role = "operator"
passphrase = "$argon2id$v=19$m=19456,t=2,p=1$kpOwCVnagVuq4VyHfAUcUQ$7zw2sT8apjipuu0msEkhbuypf+ydWZ5RufDNjiqFnFo"

[[user]]
name = "dispatch"
display = "Dispatcher 调度员"
role = "dispatcher"
passphrase = "$argon2id$v=19$m=19456,t=2,p=1$f1i+vt+jKJpyjJowWypgaA$pz4sfWGLuwgSLEOAcYgYtVs6tXHlTl8DKNP5lpEM+lw"

[[user]]
name = "leader"
display = "Duty Leader 值班领导"
role = "leader"
passphrase = "$argon2id$v=19$m=19456,t=2,p=1$93Xfomh4XW6OvNkChKpvoQ$pHAtHkmdnWAW1zr6yAzKY0db+4LAjjbM8vuwmuWRjhE"

[[user]]
name = "fire.liaison"
display = "Fire Liaison 消防联络员"
role = "department_liaison"
department = "fire"
passphrase = "$argon2id$v=19$m=19456,t=2,p=1$krAFllG6J+jCdZtvk761Kg$EkiBpAZJjFmTiFClWR3mJGzZDiX4pk4jF/O0ClHhAPc"
"#;

/// Verified against for unknown names so they take as long as wrong passphrases. A
/// hash of a throwaway random string nobody kept (same parameters as [`hash_passphrase`]).
const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$G2KMPwHnmMDKLGoQ3hqpbQ$Z+h7+Hg9r7v+Qpd1aOFZF4e10139BV79lMpuAsaODh0";

#[cfg(test)]
mod tests {
    use super::*;

    fn one_user(extra: &str, passphrase: &str) -> String {
        format!(
            "[[user]]\nname = \"li.wei\"\ndisplay = \"Li Wei 李伟\"\n{extra}\npassphrase = \"{passphrase}\"\n"
        )
    }

    #[test]
    fn right_passphrase_signs_in_with_the_role() {
        let hash = hash_passphrase("correct horse");
        let users = Users::parse(&one_user("role = \"dispatcher\"", &hash), "users.toml").unwrap();
        let user = users.sign_in("li.wei", "correct horse").unwrap();
        assert_eq!(
            user,
            User {
                name: "li.wei".into(),
                display: "Li Wei 李伟".into(),
                role: Role::Dispatcher,
                department: None,
            }
        );
    }

    #[test]
    fn wrong_passphrase_and_unknown_user_look_the_same() {
        let users = Users::demo();
        let wrong = users.sign_in("dispatch", "not it").unwrap_err();
        let unknown = users.sign_in("nobody", "zhongshu").unwrap_err();
        assert_eq!(wrong, unknown);
        assert_eq!(wrong.to_string(), unknown.to_string());
        assert_eq!(users.sign_in("", "").unwrap_err(), wrong);
    }

    #[test]
    fn plain_text_passphrase_is_rejected_without_echoing_it() {
        let err = Users::parse(
            &one_user("role = \"operator\"", "hunter2-secret"),
            "/etc/zhongshu/users.toml",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/etc/zhongshu/users.toml"), "{text}");
        assert!(text.contains("li.wei"), "{text}");
        assert!(text.contains("zhongshu users add"), "{text}");
        assert!(!text.contains("hunter2"), "the passphrase leaked: {text}");
        // A PHC string of another algorithm, or one without its hash, is refused too.
        for phc in [
            "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2g",
            "$argon2id$v=19$m=19456,t=2,p=1",
        ] {
            let err = Users::parse(&one_user("role = \"operator\"", phc), "u.toml").unwrap_err();
            assert!(err.to_string().contains("zhongshu users add"), "{err}");
        }
    }

    #[test]
    fn liaison_needs_a_department_and_others_take_none() {
        let hash = hash_passphrase("x");
        let err = Users::parse(&one_user("role = \"department_liaison\"", &hash), "u.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("u.toml") && err.contains("li.wei"), "{err}");
        assert!(err.contains("department"), "{err}");
        let ok = Users::parse(
            &one_user(
                "role = \"department_liaison\"\ndepartment = \"water\"",
                &hash,
            ),
            "u.toml",
        )
        .unwrap();
        assert_eq!(
            ok.get("li.wei").unwrap().department.as_deref(),
            Some("water")
        );
        let err = Users::parse(
            &one_user("role = \"leader\"\ndepartment = \"water\"", &hash),
            "u.toml",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("only for department_liaison"),
            "{err}"
        );
    }

    #[test]
    fn unknown_role_duplicates_and_typos_are_named() {
        let hash = hash_passphrase("x");
        let err = Users::parse(&one_user("role = \"admin\"", &hash), "u.toml").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"admin\"") && text.contains("li.wei"),
            "{text}"
        );
        assert!(
            text.contains("department_liaison"),
            "lists the roles: {text}"
        );

        let twice = one_user("role = \"operator\"", &hash).repeat(2);
        let err = Users::parse(&twice, "u.toml").unwrap_err();
        assert!(matches!(err, UsersError::Duplicate { ref user, .. } if user == "li.wei"));
        assert!(err.to_string().contains("more than once"), "{err}");

        let typo = one_user("role = \"operator\"\npassphase = \"x\"", &hash);
        let err = Users::parse(&typo, "u.toml").unwrap_err();
        assert!(
            err.to_string().contains("u.toml") && err.to_string().contains("passphase"),
            "{err}"
        );

        let err = Users::load("/nonexistent/zhongshu-users.toml").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/zhongshu-users.toml"),
            "{err}"
        );
    }

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash_passphrase("zhongshu");
        let b = hash_passphrase("zhongshu");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        for hash in [&a, &b] {
            let parsed = PasswordHash::new(hash).unwrap();
            assert!(
                Argon2::default()
                    .verify_password(b"zhongshu", &parsed)
                    .is_ok()
            );
            assert!(
                Argon2::default()
                    .verify_password(b"zhongshU", &parsed)
                    .is_err()
            );
        }
    }

    #[test]
    fn demo_users_sign_in_with_zhongshu() {
        let users = Users::demo();
        let expected = [
            ("duty", Role::Operator, None),
            ("dispatch", Role::Dispatcher, None),
            ("leader", Role::Leader, None),
            ("fire.liaison", Role::DepartmentLiaison, Some("fire")),
        ];
        assert_eq!(users.len(), expected.len());
        for (name, role, department) in expected {
            let user = users.sign_in(name, "zhongshu").unwrap();
            assert_eq!(user.role, role, "{name}");
            assert_eq!(user.department.as_deref(), department, "{name}");
        }
        // Every role a person can have is covered by one demo account.
        for role in Role::PEOPLE {
            assert!(users.iter().any(|u| u.role == role), "{role:?}");
        }
        // The debug form lists people, never hashes.
        assert!(!format!("{users:?}").contains("argon2"));
        // The decoy hash is well formed, so unknown names really cost a verification.
        assert!(check_hash(DECOY_HASH).is_ok());
    }

    #[test]
    fn added_block_appends_and_signs_in() {
        let block = add_user_line(
            "wang.fang",
            "Wang \"Fang\" 王芳",
            Role::DepartmentLiaison,
            Some("water"),
            "s3cret",
        )
        .unwrap();
        assert!(block.starts_with("[[user]]"), "{block}");
        assert!(!block.contains("s3cret"), "{block}");
        let file = format!("{DEMO_USERS}\n{block}");
        let users = Users::parse(&file, "u.toml").unwrap();
        let user = users.sign_in("wang.fang", "s3cret").unwrap();
        assert_eq!(user.display, "Wang \"Fang\" 王芳");
        assert_eq!(user.department.as_deref(), Some("water"));
        assert!(add_user_line("x", "X", Role::DepartmentLiaison, None, "p").is_err());
        assert!(add_user_line("x", "X", Role::Operator, Some("fire"), "p").is_err());
        assert!(add_user_line("two words", "X", Role::Operator, None, "p").is_err());
        // Role names round-trip.
        for role in Role::ALL {
            assert_eq!(Role::from_name(role.as_str()), Some(role));
        }
        assert_eq!(Role::from_name("admin"), None);
    }

    #[test]
    fn hashes_with_weak_parameters_are_refused() {
        let weak = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8, 1, 1, None).unwrap(),
        )
        .hash_password(
            b"correct horse",
            &SaltString::encode_b64(&[7u8; 16]).unwrap(),
        )
        .unwrap()
        .to_string();
        let file = format!(
            "[[user]]\nname = \"li.wei\"\nrole = \"dispatcher\"\npassphrase = \"{weak}\"\n"
        );
        let err = Users::parse(&file, "users.toml").unwrap_err().to_string();
        assert!(err.contains("weak Argon2 parameters"), "{err}");
        // The crate's defaults (what `users add` writes) pass.
        let good = hash_passphrase("correct horse");
        let file = format!(
            "[[user]]\nname = \"li.wei\"\nrole = \"dispatcher\"\npassphrase = \"{good}\"\n"
        );
        assert!(Users::parse(&file, "users.toml").is_ok());
    }
}
