//! The generated assets work in the real tools: every man page renders with `man -l` (man-db,
//! as `man appliance` would show it) and names its subcommands; every bash completion loads in
//! a real `bash`, registers for its binary and completes the subcommands; zsh and fish files
//! pass their shell's syntax check where that shell is installed.

use std::path::Path;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
}

fn visible_subcommands(cmd: &clap::Command) -> Vec<String> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name().to_string())
        .collect()
}

fn man(page: &Path) -> String {
    let out = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LANG", "C.UTF-8")
        .output()
        .expect("run man (package man-db)");
    assert!(
        out.status.success(),
        "man -l {}: {}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn man_pages_render_and_name_every_subcommand() {
    assert!(
        have("man"),
        "man is missing: install man-db (scripts/setup)"
    );
    let dir = tempfile::tempdir().unwrap();
    let files = xtask::assets(dir.path()).unwrap();
    for cmd in xtask::commands() {
        let name = cmd.get_name().to_string();
        let text = man(&dir.path().join("man").join(format!("{name}.1")));
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{name}.1:\n{text}"
        );
        let subs = visible_subcommands(&cmd);
        assert!(!subs.is_empty(), "{name} has no subcommands");
        for sub in &subs {
            assert!(
                text.contains(&format!("{name}-{sub}(1)")),
                "{name}.1 lacks {sub}:\n{text}"
            );
            let page = dir.path().join("man").join(format!("{name}-{sub}.1"));
            assert!(files.contains(&page), "no page {}", page.display());
            let sub_text = man(&page);
            assert!(
                sub_text.contains("OPTIONS") || sub_text.contains("SUBCOMMANDS"),
                "{}:\n{sub_text}",
                page.display()
            );
        }
    }
    // A flag's help reaches the page: the one `jobs create` is known by.
    let create = man(&dir.path().join("man/appliance-jobs-create.1"));
    assert!(
        create.contains("--map") && create.contains("DISK=TARGET"),
        "{create}"
    );
}

#[test]
fn bash_completions_load_and_complete_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    xtask::assets(dir.path()).unwrap();
    for cmd in xtask::commands() {
        let name = cmd.get_name().to_string();
        let file = xtask::completion_path(dir.path(), clap_complete::Shell::Bash, &name);
        // Load it, find the function `complete -p` registered, ask it for the first word.
        let script = format!(
            "source '{}' || exit 9\n\
             spec=$(complete -p {name}) || exit 8\n\
             echo \"$spec\"\n\
             fn=$(sed -n 's/.*-F \\([^ ]*\\).*/\\1/p' <<<\"$spec\")\n\
             COMP_WORDS=({name} ''); COMP_CWORD=1; COMP_LINE='{name} '; COMP_POINT=${{#COMP_LINE}}\n\
             \"$fn\" {name} '' {name}\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        let out = Command::new("bash")
            .arg("--norc")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.starts_with("complete ") && text.lines().next().unwrap().ends_with(&name),
            "{text}"
        );
        let words: Vec<&str> = text.lines().skip(1).collect();
        for sub in visible_subcommands(&cmd) {
            assert!(
                words.contains(&sub.as_str()),
                "{name}: {sub} not completed: {words:?}"
            );
        }
    }
}

#[test]
fn zsh_and_fish_completions_pass_their_shells_syntax_check() {
    let dir = tempfile::tempdir().unwrap();
    xtask::assets(dir.path()).unwrap();
    for (shell, kind, check) in [
        ("zsh", clap_complete::Shell::Zsh, "-n"),
        ("fish", clap_complete::Shell::Fish, "--no-execute"),
    ] {
        if !have(shell) {
            eprintln!("{shell} is not installed: its completions were written, not checked");
            continue;
        }
        for cmd in xtask::commands() {
            let file = xtask::completion_path(dir.path(), kind, cmd.get_name());
            let out = Command::new(shell).arg(check).arg(&file).output().unwrap();
            assert!(
                out.status.success(),
                "{shell} {check} {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
