//! Shell completions and the man page, generated from the same clap
//! definitions the command line is parsed with, so neither can drift from
//! what ferry accepts.

use std::io;

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;

use super::Cli;

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "ferry", &mut script);
    script
}

/// The man page, in roff: the top command's sections, then one for each
/// subcommand and each client request with its synopsis, description and
/// options, so that one page documents every flag (`--timeout` is the
/// client's, not the top command's). clap_mangen's own list of
/// subcommands is left out: it points to a page per subcommand
/// (`ferry-client(1)`), which ferry does not have.
pub fn man_page() -> io::Result<Vec<u8>> {
    let mut command = Cli::command();
    // Built, every subcommand knows its full name (`ferry client put`) and
    // holds the global options of its parents.
    command.build();
    let man = Man::new(command.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    page.extend(retitled(|w| man.render_name_section(w), Heading::Keep)?);
    page.extend(retitled(|w| man.render_synopsis_section(w), Heading::Keep)?);
    page.extend(retitled(
        |w| man.render_description_section(w),
        Heading::Keep,
    )?);
    page.extend(retitled(|w| man.render_options_section(w), Heading::Keep)?);
    for sub in command.get_subcommands() {
        append_sections(&mut page, sub, &command)?;
    }
    page.extend(retitled(|w| man.render_version_section(w), Heading::Keep)?);
    Ok(page)
}

/// What becomes of the `.SH` heading of a section rendered on its own.
enum Heading<'a> {
    Keep,
    /// Replaced by this line.
    Replace(&'a str),
}

/// Appends `command`'s sections to `page`: a heading of its full name,
/// its synopsis, description and options, then its own subcommands'.
/// The options it inherits from `parent` are left to the parent's section.
fn append_sections(page: &mut Vec<u8>, command: &Command, parent: &Command) -> io::Result<()> {
    if command.get_name() == "help" {
        return Ok(());
    }
    let inherited = |id: &clap::Id| {
        parent
            .get_arguments()
            .any(|arg| arg.get_id() == id && arg.is_global_set())
    };
    let own = command.clone().mut_args(|arg| {
        if inherited(arg.get_id()) {
            arg.hide(true)
        } else {
            arg
        }
    });
    let name = own
        .get_bin_name()
        .unwrap_or_else(|| own.get_name())
        .to_uppercase();
    let man = Man::new(own.clone());
    let heading = format!(".SH \"{name}\"");
    page.extend(retitled(
        |w| man.render_synopsis_section(w),
        Heading::Replace(&heading),
    )?);
    // A paragraph of its own, apart from the synopsis.
    page.extend(retitled(
        |w| man.render_description_section(w),
        Heading::Replace(".PP"),
    )?);
    if own
        .get_arguments()
        .any(|arg| !arg.is_hide_set() && arg.get_id() != "help" && arg.get_id() != "version")
    {
        page.extend(retitled(
            |w| man.render_options_section(w),
            Heading::Replace(".SS Options"),
        )?);
    }
    for sub in own.get_subcommands() {
        append_sections(page, sub, &own)?;
    }
    Ok(())
}

/// One section clap_mangen renders as a page of its own, made part of a
/// bigger page: its `.SH` heading as `heading` says, and the string
/// definitions every rendering starts with dropped, the page's title
/// having made them.
fn retitled(
    render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
    heading: Heading<'_>,
) -> io::Result<Vec<u8>> {
    let mut rendered = Vec::new();
    render(&mut rendered)?;
    let text = String::from_utf8_lossy(&rendered);
    let mut out = String::new();
    let mut retitled = false;
    for line in text.lines() {
        if line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq") {
            continue;
        }
        if !retitled && line.starts_with(".SH ") {
            retitled = true;
            if let Heading::Replace(heading) = heading {
                out.push_str(heading);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out.into_bytes())
}
