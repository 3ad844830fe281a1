//! The network fix-up (docs/network.md): read the restored system's network files, map its
//! interfaces onto the target's NICs with the job's rules, rewrite each file with its
//! system's transform, and pin each mapped NIC's name by its MAC with a systemd `.link` file
//! so the name the files now use is the name the NIC gets, whatever the OS's naming scheme.
//!
//! Every file is transformed before any edit is recorded: a transform that refuses its file
//! fails the whole fix-up with nothing written.

use std::collections::BTreeSet;

use super::{FileAction, FileEdit, NetworkParams, Planner};
use crate::network::{self, NetworkRules, NicPlan};
use crate::FixupError;

const LINK_DIR: &str = "etc/systemd/network";
const PERSISTENT_NET: &str = "etc/udev/rules.d/70-persistent-net.rules";

/// Plans the network edits; returns each configured interface as it will come up.
pub(super) fn plan(p: &mut Planner, n: &NetworkParams) -> Result<Vec<String>, FixupError> {
    if p.root
        .join(PERSISTENT_NET)
        .symlink_metadata()
        .is_ok_and(|m| m.is_file())
    {
        p.edits.push(FileEdit {
            path: PERSISTENT_NET.into(),
            what: "remove MAC-bound interface names".into(),
            action: FileAction::RemoveFile,
        });
    }
    let found = network::read_root(p.root)?;
    for e in &found.refused {
        p.notes.push(format!("network: {e}"));
    }
    let nic_plan = n.rules.check(&found.config, &n.targets)?;
    let shown = network::preview(&found.config, &nic_plan, &n.rules)?;
    let lines: Vec<String> = shown.iter().map(ToString::to_string).collect();
    p.notes.extend(
        nic_plan
            .to_string()
            .lines()
            .skip(1)
            .map(|l| format!("network: {}", l.trim())),
    );

    let (removes, writes) = rewrite(p, &found.files, &nic_plan, &n.rules)?;
    p.edits.extend(removes);
    p.edits.extend(writes);
    if has_systemd_udev(p) {
        for pair in &nic_plan.pairs {
            let rel = format!("{LINK_DIR}/10-ferry-{}.link", pair.new);
            let text = format!(
                "# Written by Ferry's fix-up (docs/network.md): this NIC gets the name the\n\
                 # restored network configuration expects.\n\
                 [Match]\nMACAddress={mac}\n\n[Link]\nName={new}\n",
                mac = pair.new_mac,
                new = pair.new,
            );
            p.transform(
                &rel,
                &format!("name the NIC {} {} by its MAC", pair.new_mac, pair.new),
                true,
                |_| Ok(text),
            )?;
        }
    } else if !nic_plan.pairs.is_empty() {
        p.notes.push(
            "network: no systemd-udevd in the restored system: the new names rely on its own \
             naming rules; check them on the first boot"
                .into(),
        );
    }
    Ok(lines)
}

type Edits = (Vec<FileEdit>, Vec<FileEdit>);

/// Transforms every file read; returns the removals (files renamed away) and the writes, so a
/// rename onto a name another rename frees (a swap) never overwrites a file still needed.
fn rewrite(
    p: &mut Planner,
    files: &[(String, ferry_format::network::ConfigSystem)],
    plan: &NicPlan,
    rules: &NetworkRules,
) -> Result<Edits, FixupError> {
    let mut removes = Vec::new();
    let mut writes = Vec::new();
    let mut renamed_away: BTreeSet<&str> = BTreeSet::new();
    let mut renamed_to: Vec<(String, String)> = Vec::new();
    for (rel, system) in files {
        let Some(before) = p.read(rel)? else {
            continue;
        };
        let edited =
            network::transform_file(*system, &format!("/{rel}"), &before, plan, &rules.reip)?;
        if !edited.changed(&before) {
            continue;
        }
        let what: Vec<String> = edited.edits.iter().map(ToString::to_string).collect();
        let what = format!("{system}: {}", what.join("; "));
        match &edited.rename {
            Some(name) => {
                let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
                let to = format!("{dir}/{name}");
                renamed_away.insert(rel.as_str());
                renamed_to.push((rel.clone(), to.clone()));
                removes.push(FileEdit {
                    path: rel.into(),
                    what: format!("renamed to {to}"),
                    action: FileAction::RemoveFile,
                });
                writes.push(FileEdit {
                    path: to.into(),
                    what,
                    action: FileAction::Write {
                        before: None,
                        after: edited.text,
                    },
                });
            }
            None => writes.push(FileEdit {
                path: rel.into(),
                what,
                action: FileAction::Write {
                    before: Some(before),
                    after: edited.text,
                },
            }),
        }
    }
    for (from, to) in &renamed_to {
        if p.exists(to) && !renamed_away.contains(to.as_str()) {
            return Err(FixupError::Transform {
                what: format!("rename {from} to {to}"),
                detail: format!(
                    "{to} exists already and is not renamed away: remove one of the two \
                     files, or map the interfaces with --nic so the names do not collide"
                ),
            });
        }
    }
    Ok((removes, writes))
}

/// Merged-/usr systems keep udev under usr/lib; a `lib` that is a symlink is never followed
/// (an absolute link points into the host).
fn has_systemd_udev(p: &Planner) -> bool {
    p.exists("usr/lib/systemd/systemd-udevd")
        || (p
            .root
            .join("lib")
            .symlink_metadata()
            .is_ok_and(|m| m.is_dir())
            && p.exists("lib/systemd/systemd-udevd"))
}
