//! Which target disk each snapshot disk goes onto, by the job's [`Mapping`]; the inventory is
//! checked first (no path twice, sane sector sizes).

use ferry_format::units::human_bytes;

use crate::error::PlanError;
use crate::types::{Mapping, SourceDisk, TargetDisk};

pub(crate) fn check_inventory(targets: &[TargetDisk]) -> Result<(), PlanError> {
    for (i, t) in targets.iter().enumerate() {
        if targets[..i].iter().any(|o| o.path == t.path) {
            return Err(PlanError::Inventory(format!("{} is listed twice", t.path)));
        }
        let ss = t.logical_sector_size;
        if !(512..=65536).contains(&ss) || !ss.is_power_of_two() {
            return Err(PlanError::Inventory(format!(
                "{} reports logical sector size {ss}",
                t.path
            )));
        }
    }
    Ok(())
}

/// (disk index, target index) pairs, in disk order.
pub(crate) fn assign(
    disks: &[SourceDisk],
    targets: &[TargetDisk],
    mapping: &Mapping,
) -> Result<Vec<(usize, usize)>, PlanError> {
    let disk_index = |name: &str| {
        disks
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| PlanError::UnknownDisk {
                disk: name.to_string(),
                known: disks
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    };
    let mut pairs: Vec<(usize, usize)> = match mapping {
        Mapping::Explicit(list) => list
            .iter()
            .map(|(disk, path)| {
                let t = targets
                    .iter()
                    .position(|t| t.path == *path)
                    .ok_or_else(|| PlanError::UnknownTarget {
                        target: path.clone(),
                        known: known_targets(targets),
                    })?;
                Ok((disk_index(disk)?, t))
            })
            .collect::<Result<_, PlanError>>()?,
        Mapping::BySerial(list) => list
            .iter()
            .map(|(disk, serial)| Ok((disk_index(disk)?, by_serial(disk, serial, targets)?)))
            .collect::<Result<_, PlanError>>()?,
        Mapping::ByOrder => {
            if let Some(d) = disks.get(targets.len()) {
                return Err(PlanError::NoTarget {
                    disk: d.name.clone(),
                    reason: format!(
                        "the snapshot has {} disks and the target {} ({}); map the disks explicitly to restore only some",
                        disks.len(),
                        targets.len(),
                        known_targets(targets)
                    ),
                });
            }
            (0..disks.len()).map(|i| (i, i)).collect()
        }
        Mapping::BySize => by_size(disks, targets)?,
    };
    for (i, &(d, t)) in pairs.iter().enumerate() {
        if let Some(&(other, _)) = pairs[..i].iter().find(|p| p.1 == t) {
            return Err(PlanError::TwoOnOne {
                first: disks[other].name.clone(),
                second: disks[d].name.clone(),
                target: targets[t].path.clone(),
            });
        }
        if pairs[..i].iter().any(|p| p.0 == d) {
            return Err(PlanError::DiskTwice {
                disk: disks[d].name.clone(),
            });
        }
    }
    pairs.sort_by_key(|p| p.0);
    Ok(pairs)
}

fn known_targets(targets: &[TargetDisk]) -> String {
    if targets.is_empty() {
        return "no disks".into();
    }
    targets
        .iter()
        .map(|t| format!("{} {}", t.path, human_bytes(t.size)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn by_serial(disk: &str, serial: &str, targets: &[TargetDisk]) -> Result<usize, PlanError> {
    let found: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i].serial.as_deref().map(str::trim) == Some(serial.trim()))
        .collect();
    match found[..] {
        [one] => Ok(one),
        [] => Err(PlanError::NoTarget {
            disk: disk.to_string(),
            reason: format!(
                "no target disk has serial {serial:?} (serials: {})",
                targets
                    .iter()
                    .map(|t| format!("{} {:?}", t.path, t.serial.as_deref().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
        _ => Err(PlanError::Ambiguous {
            disk: disk.to_string(),
            reason: format!("{} target disks have serial {serial:?}", found.len()),
        }),
    }
}

/// Largest disk first, each onto the smallest unused target that holds it.
fn by_size(disks: &[SourceDisk], targets: &[TargetDisk]) -> Result<Vec<(usize, usize)>, PlanError> {
    let mut order: Vec<usize> = (0..disks.len()).collect();
    order.sort_by(|&a, &b| disks[b].size.cmp(&disks[a].size).then(a.cmp(&b)));
    let mut used = vec![false; targets.len()];
    let mut pairs = Vec::new();
    for d in order {
        let disk = &disks[d];
        let fits = |t: &&TargetDisk| t.size >= disk.size;
        let best = (0..targets.len())
            .filter(|&t| !used[t] && fits(&&targets[t]))
            .min_by_key(|&t| targets[t].size);
        let Some(best) = best else {
            return Err(PlanError::NoTarget {
                disk: disk.name.clone(),
                reason: format!(
                    "no unused target holds {} bytes ({}); targets: {}",
                    disk.size,
                    human_bytes(disk.size),
                    known_targets(targets)
                ),
            });
        };
        let tied: Vec<&str> = (0..targets.len())
            .filter(|&t| !used[t] && targets[t].size == targets[best].size)
            .map(|t| targets[t].path.as_str())
            .collect();
        if tied.len() > 1 {
            return Err(PlanError::Ambiguous {
                disk: disk.name.clone(),
                reason: format!(
                    "{} fit it equally well ({} each)",
                    tied.join(" and "),
                    human_bytes(targets[best].size)
                ),
            });
        }
        used[best] = true;
        pairs.push((d, best));
    }
    Ok(pairs)
}
