//! The report's network section, read back from the restored files after the fix-up: each
//! configured interface, its name, its addresses, and whether the target has a NIC of that
//! name (a bond, bridge or VLAN: over one). A missing NIC is a warning, not a boot failure.

use std::path::Path;

use super::Check;
use crate::network::mapping::{How, NicPair, NicPlan, TargetNic};
use crate::network::{self, NetworkRules};
use crate::FixupError;

/// One check per configured interface (loopback left out), and one per file that could not
/// be read.
pub fn network(root: &Path, targets: &[TargetNic]) -> Result<Vec<Check>, FixupError> {
    let found = network::read_root(root)?;
    // The target's NICs as they are: every name maps onto itself.
    let present = NicPlan {
        pairs: targets
            .iter()
            .map(|t| NicPair {
                old: t.name.clone(),
                old_mac: Some(t.mac.clone()),
                new: t.name.clone(),
                new_mac: t.mac.clone(),
                driver: t.driver.clone(),
                how: How::Order,
            })
            .collect(),
        ..NicPlan::default()
    };
    let mut out: Vec<Check> = network::preview(&found.config, &present, &NetworkRules::default())?
        .into_iter()
        .map(|i| Check {
            name: format!("network {}", i.new),
            ok: i.has_nic,
            critical: false,
            detail: i.to_string(),
        })
        .collect();
    out.extend(found.refused.iter().map(|e| Check {
        name: format!("network file {}", e.file),
        ok: false,
        critical: false,
        detail: e.to_string(),
    }));
    Ok(out)
}
