//! `appliance token create | list | revoke` (docs/store.md, tokens.json; docs/protocol.md).

use std::io::Write;

use anyhow::{bail, Context, Result};
use ferry_format::admin::TokenCreate;
use ferry_format::api::{Role, TokenInfo};

use crate::ops::Admin;

/// What `token create` was given.
#[derive(Clone, Debug, Default)]
pub struct CreateArgs {
    pub machines: Vec<String>,
    pub all_machines: bool,
    pub expires: Option<String>,
    pub name: Option<String>,
    pub json: bool,
}

/// The machine scope a new token gets. A backup token must say which machines it may write:
/// a client holding it signs snapshots in those machines' names, so "every machine" is only
/// given when asked for (`--all-machines`). Restore tokens read every machine unless limited.
pub fn scope_for(role: Role, machines: &[String], all: bool) -> Result<Option<Vec<String>>> {
    match (role, machines.is_empty(), all) {
        (_, false, true) => bail!("give --machine or --all-machines, not both"),
        (Role::Backup | Role::Restore, false, false) => Ok(Some(machines.to_vec())),
        (Role::Backup, true, false) => bail!(
            "a backup token must name the machines it may back up: add --machine NAME (repeatable; \
             a pattern like 'web*' matches every name starting with web), or --all-machines for a \
             token that may write snapshots of every machine"
        ),
        (Role::Backup | Role::Restore, true, _) => Ok(None),
        (_, false, _) => bail!(
            "a {} token is not limited to machines: leave out --machine",
            role.name()
        ),
        (_, true, true) => {
            bail!("--all-machines applies to backup and restore tokens only: leave it out")
        }
        (_, true, false) => Ok(None),
    }
}

pub fn token_create(a: &dyn Admin, role: Role, args: CreateArgs) -> Result<()> {
    // Checked here too, so a bad scope is refused before a remote appliance is asked.
    scope_for(role, &args.machines, args.all_machines)?;
    let req = TokenCreate {
        role,
        machines: args.machines,
        all_machines: args.all_machines,
        expires: args.expires,
        name: args.name,
    };
    let made = a.token_create(&req).context("create a token")?;
    if args.json {
        let v = serde_json::json!({ "id": made.info.id, "token": made.token });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    // Only the token on stdout: scripts capture it with $(...).
    println!("{}", made.token);
    let info = &made.info;
    eprintln!(
        "Created {} token {} for {}{} (shown once; revoke with `appliance token revoke {}`)",
        role.name(),
        info.id,
        scope_text(info),
        info.expires
            .as_deref()
            .map(|e| format!(", expires {e}"))
            .unwrap_or_default(),
        info.id
    );
    Ok(())
}

pub fn token_list(a: &dyn Admin, json: bool) -> Result<()> {
    let list = a.tokens().context("list tokens")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    write_token_table(&mut std::io::stdout().lock(), &list)?;
    Ok(())
}

pub fn token_revoke(a: &dyn Admin, id: &str) -> Result<()> {
    let info = a
        .token_revoke(id)
        .with_context(|| format!("revoke token {id}"))?;
    println!(
        "Revoked {} token {}: it now gets 401. Sessions it opened cannot be used or committed.",
        info.role.name(),
        info.id
    );
    Ok(())
}

fn scope_text(t: &TokenInfo) -> String {
    match (t.role, &t.machines) {
        (Role::Backup | Role::Restore, Some(m)) => m.join(","),
        (Role::Backup | Role::Restore, None) => "all machines".into(),
        _ => "-".into(),
    }
}

/// ID, ROLE, STATE, NAME, MACHINES, CREATED, EXPIRES, LAST USED.
pub fn write_token_table(out: &mut impl Write, list: &[TokenInfo]) -> std::io::Result<()> {
    let rows: Vec<[String; 8]> = list
        .iter()
        .map(|t| {
            [
                t.id.clone(),
                t.role.name().to_string(),
                format!("{:?}", t.state).to_lowercase(),
                t.name.clone().unwrap_or_else(|| "-".into()),
                scope_text(t),
                t.created.clone(),
                t.expires.clone().unwrap_or_else(|| "never".into()),
                t.last_used.clone().unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    let head = [
        "ID",
        "ROLE",
        "STATE",
        "NAME",
        "MACHINES",
        "CREATED",
        "EXPIRES",
        "LAST USED",
    ];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(&head))?;
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_tokens_must_choose_their_machines() {
        let m = vec!["web*".to_string()];
        assert!(scope_for(Role::Backup, &[], false).is_err());
        assert_eq!(scope_for(Role::Backup, &[], true).unwrap(), None);
        assert_eq!(scope_for(Role::Backup, &m, false).unwrap(), Some(m.clone()));
        assert!(scope_for(Role::Backup, &m, true).is_err());
        assert_eq!(scope_for(Role::Restore, &[], false).unwrap(), None);
        assert_eq!(
            scope_for(Role::Restore, &m, false).unwrap(),
            Some(m.clone())
        );
        assert!(scope_for(Role::Admin, &m, false).is_err());
        assert!(scope_for(Role::Enroll, &[], true).is_err());
        assert_eq!(scope_for(Role::Enroll, &[], false).unwrap(), None);
    }
}
