//! `tally completions SHELL` and `tally man`: shell completions and a man
//! page, generated from the same clap definition as `--help`, printed to
//! stdout for a package or an operator to install.

use std::io::Write as _;

use anyhow::Context as _;

/// Arguments of `tally completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Prints the completion script of `args.shell` for `cmd`.
pub fn completions(args: &CompletionsArgs, mut cmd: clap::Command) -> anyhow::Result<()> {
    let name = cmd.get_name().to_owned();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, name, &mut out);
    out.flush()
        .context("cannot write the completions to stdout")
}

/// Prints the man page of `cmd` (roff, section 1), then one section per
/// subcommand, so `man tally` shows every command's flags.
pub fn man(cmd: clap::Command) -> anyhow::Result<()> {
    let mut page = Vec::new();
    let cmd = cmd.disable_help_subcommand(true);
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    // clap_mangen names each subcommand as a page of its own,
    // `tally-serve(1)`; here they are sections of this page.
    let mut list = Vec::new();
    man.render_subcommands_section(&mut list)?;
    let mut list = String::from_utf8_lossy(&list).into_owned();
    for sub in cmd.get_subcommands() {
        let name = sub.get_name().replace('-', "\\-");
        list = list.replace(
            &format!("{}\\-{name}(1)", cmd.get_name()),
            &format!("{} {name}", cmd.get_name()),
        );
    }
    page.extend_from_slice(list.as_bytes());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_command_section(&mut page, cmd.get_name(), sub)?;
    }
    man.render_version_section(&mut page)?;
    std::io::stdout()
        .lock()
        .write_all(&page)
        .context("cannot write the man page to stdout")
}

/// A section `tally SUB` with the subcommand's synopsis, description and
/// options, and its own subcommands' sections after it.
fn render_command_section(
    page: &mut Vec<u8>,
    parent: &str,
    cmd: &clap::Command,
) -> anyhow::Result<()> {
    let name = format!("{parent} {}", cmd.get_name());
    writeln!(page, ".SH \"{}\"", name.to_uppercase())?;
    let man = clap_mangen::Man::new(cmd.clone().bin_name(&name));
    // The subcommand's own sections, each a subsection of this one.
    let mut inner = Vec::new();
    man.render_synopsis_section(&mut inner)?;
    man.render_description_section(&mut inner)?;
    man.render_options_section(&mut inner)?;
    let text = String::from_utf8_lossy(&inner).replace(".SH ", ".SS ");
    page.extend_from_slice(text.as_bytes());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_command_section(page, &name, sub)?;
    }
    Ok(())
}
