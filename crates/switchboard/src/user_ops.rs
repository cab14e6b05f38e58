//! The user operations that `switchboard user` and the admin API share: one
//! implementation, so both check, refuse and word their refusals alike. Each failure is
//! an `admin::OpError` naming the field at fault; the CLI prints its message.

use admin::{ErrorKind, ForwardingView, OpError, UserView};
use store::{Ha1Set, StoreError, User, UserStore};

/// A store error as an operation's failure: its kind and the field it is about.
pub fn store_error(e: StoreError) -> OpError {
    let (kind, field) = match &e {
        StoreError::InvalidUserName { .. } => (ErrorKind::Invalid, Some("name")),
        StoreError::UserExists(_) => (ErrorKind::Conflict, Some("name")),
        StoreError::ExtensionTaken { what, .. } => (ErrorKind::Conflict, Some(*what)),
        StoreError::InvalidExtension { .. } => (ErrorKind::Invalid, Some("extension")),
        StoreError::InvalidForwarding { .. } => (ErrorKind::Invalid, Some("forwarding")),
        StoreError::NoSuchUser(_) => (ErrorKind::NotFound, None),
        StoreError::Missing { .. } => (ErrorKind::Unavailable, None),
        _ => (ErrorKind::Internal, None),
    };
    OpError::new(kind, field, e.to_string())
}

fn check_password(password: &str) -> Result<(), OpError> {
    if password.is_empty() {
        return Err(OpError::new(
            ErrorKind::Invalid,
            Some("password"),
            "the password is empty",
        ));
    }
    Ok(())
}

/// Adds a user (`user add`): hashes of the password for `realm`, an extension if given.
pub fn add(
    users: &mut dyn UserStore,
    realm: &str,
    name: &str,
    password: &str,
    extension: Option<&str>,
    now: u64,
) -> Result<User, OpError> {
    check_password(password)?;
    let mut user = User::new(name, realm, password, now).map_err(store_error)?;
    user.extension = extension.map(str::to_owned);
    users.add(&user).map_err(store_error)?;
    Ok(user)
}

/// Sets a user's password (`user passwd`).
pub fn set_password(
    users: &mut dyn UserStore,
    realm: &str,
    name: &str,
    password: &str,
) -> Result<(), OpError> {
    check_password(password)?;
    users
        .set_ha1(name, realm, &Ha1Set::compute(name, realm, password))
        .map_err(store_error)
}

/// Gives a user an extension or takes it away (`user extension`).
pub fn set_extension(
    users: &mut dyn UserStore,
    name: &str,
    extension: Option<&str>,
) -> Result<(), OpError> {
    users.set_extension(name, extension).map_err(store_error)
}

/// Removes a user (`user remove`).
pub fn remove(users: &mut dyn UserStore, name: &str) -> Result<(), OpError> {
    users.remove(name).map_err(store_error)
}

/// One user.
pub fn get(users: &dyn UserStore, name: &str) -> Result<User, OpError> {
    users
        .get(name)
        .map_err(store_error)?
        .ok_or_else(|| OpError::new(ErrorKind::NotFound, None, format!("no user \"{name}\"")))
}

/// A user as the API shows them.
pub fn view(u: &User) -> UserView {
    let f = &u.forwarding;
    UserView {
        name: u.name.clone(),
        extension: u.extension.clone(),
        realm: u.realm.clone(),
        created_at: u.created_at,
        forwarding: ForwardingView {
            always: f.always.clone(),
            busy: f.busy.clone(),
            no_answer: f.no_answer.clone(),
            no_answer_secs: f.no_answer_secs,
            unreachable: f.unreachable.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use store::MemoryUserStore;

    #[test]
    fn refusals_name_the_field() {
        let mut users = MemoryUserStore::default();
        add(&mut users, "example.test", "alice", "pw", Some("201"), 1).unwrap();
        let e = add(&mut users, "example.test", "alice", "pw", None, 1).unwrap_err();
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (ErrorKind::Conflict, Some("name"))
        );
        let e = add(&mut users, "example.test", "bob", "pw", Some("201"), 1).unwrap_err();
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (ErrorKind::Conflict, Some("extension"))
        );
        let e = add(&mut users, "example.test", "bob", "pw", Some("2x"), 1).unwrap_err();
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (ErrorKind::Invalid, Some("extension"))
        );
        let e = add(&mut users, "example.test", "b b", "pw", None, 1).unwrap_err();
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (ErrorKind::Invalid, Some("name"))
        );
        let e = add(&mut users, "example.test", "bob", "", None, 1).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("password"));
        let e = remove(&mut users, "nobody").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        set_extension(&mut users, "alice", None).unwrap();
        assert_eq!(view(&get(&users, "alice").unwrap()).extension, None);
    }
}
