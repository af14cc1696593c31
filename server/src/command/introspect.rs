//! COMMAND: what client libraries and redis-cli ask to learn the command
//! table (arity, flags, key positions, docs).

use ringcache_protocol::Args;

use super::connection::help;
use super::{COMMANDS, CmdError, CmdResult, Ctx, Reply, Spec, eq_ic, lookup, sub_name};
use crate::store::glob::glob_match;

fn acl_categories(s: &Spec) -> Vec<&'static str> {
    let mut c = Vec::new();
    if s.has_flag("write") {
        c.push("@write");
    }
    if s.has_flag("readonly") {
        c.push("@read");
    }
    c.push(match s.group {
        "string" => "@string",
        "generic" => "@keyspace",
        "connection" => "@connection",
        "cluster" => "@connection",
        _ => "@admin",
    });
    c.push(if s.has_flag("fast") { "@fast" } else { "@slow" });
    c
}

fn write_info(out: &mut Reply<'_>, s: &Spec) {
    out.array(10);
    out.bulk(s.name.as_bytes());
    out.int(i64::from(s.arity));
    out.set(s.flags.len());
    for f in s.flags {
        out.simple(f);
    }
    out.int(i64::from(s.first_key));
    out.int(i64::from(s.last_key));
    out.int(i64::from(s.step));
    let acl = acl_categories(s);
    out.set(acl.len());
    for a in acl {
        out.simple(a);
    }
    out.array(0); // tips
    out.array(0); // key specifications
    out.array(0); // subcommands
}

fn write_docs(out: &mut Reply<'_>, s: &Spec) {
    out.map(3);
    out.bulk(b"summary");
    out.bulk(s.summary.as_bytes());
    out.bulk(b"since");
    out.bulk(s.since.as_bytes());
    out.bulk(b"group");
    out.bulk(s.group.as_bytes());
}

/// Key positions of a request, from the command's first/last/step.
pub fn key_positions(s: &Spec, argc: usize) -> Vec<usize> {
    if s.first_key <= 0 {
        return Vec::new();
    }
    let last = if s.last_key < 0 { argc as i32 + s.last_key } else { s.last_key };
    (s.first_key..=last.min(argc as i32 - 1)).step_by(s.step.max(1) as usize).map(|i| i as usize).collect()
}

pub fn command(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    if args.len() == 1 {
        ctx.out.array(COMMANDS.len());
        for s in COMMANDS {
            write_info(&mut ctx.out, s);
        }
        return Ok(());
    }
    let sub = args.get(1);
    // Subcommand arities as Redis 7.0 declares them.
    let arity = |n: i32| -> CmdResult {
        let argc = args.len() as i32;
        if (n > 0 && argc != n) || (n < 0 && argc < -n) {
            Err(CmdError::Arity(sub_name("command", sub)))
        } else {
            Ok(())
        }
    };
    if eq_ic(sub, "COUNT") {
        arity(2)?;
        ctx.out.int(COMMANDS.len() as i64);
    } else if eq_ic(sub, "INFO") {
        if args.len() == 2 {
            ctx.out.array(COMMANDS.len());
            COMMANDS.iter().for_each(|s| write_info(&mut ctx.out, s));
        } else {
            ctx.out.array(args.len() - 2);
            for name in args.iter().skip(2) {
                match lookup(name) {
                    Some(i) => write_info(&mut ctx.out, &COMMANDS[i]),
                    None => ctx.out.null_array(),
                }
            }
        }
    } else if eq_ic(sub, "DOCS") {
        let specs: Vec<&Spec> = if args.len() == 2 {
            COMMANDS.iter().collect()
        } else {
            args.iter().skip(2).filter_map(lookup).map(|i| &COMMANDS[i]).collect()
        };
        ctx.out.map(specs.len());
        for s in specs {
            ctx.out.bulk(s.name.as_bytes());
            write_docs(&mut ctx.out, s);
        }
    } else if eq_ic(sub, "LIST") {
        let pattern = match args.len() {
            2 => None,
            5 if eq_ic(args.get(2), "FILTERBY") && eq_ic(args.get(3), "PATTERN") => Some(args.get(4)),
            _ => return Err(CmdError::Syntax),
        };
        let names: Vec<&str> = COMMANDS
            .iter()
            .map(|s| s.name)
            .filter(|n| pattern.is_none_or(|p| glob_match(p, n.as_bytes(), true)))
            .collect();
        ctx.out.array(names.len());
        names.iter().for_each(|n| ctx.out.bulk(n.as_bytes()));
    } else if eq_ic(sub, "GETKEYS") {
        arity(-4)?;
        let Some(i) = lookup(args.get(2)) else {
            return Err(CmdError::msg("ERR Invalid command specified"));
        };
        let s = &COMMANDS[i];
        let argc = args.len() - 2;
        if (s.arity > 0 && argc as i32 != s.arity) || (s.arity < 0 && (argc as i32) < -s.arity) {
            return Err(CmdError::msg("ERR Invalid number of arguments specified for command"));
        }
        let keys = key_positions(s, argc);
        if keys.is_empty() {
            return Err(CmdError::msg("ERR The command has no key arguments"));
        }
        ctx.out.array(keys.len());
        for k in keys {
            ctx.out.bulk(args.get(k + 2));
        }
    } else if eq_ic(sub, "HELP") {
        arity(2)?;
        help(
            ctx,
            &[
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "(no subcommand)",
                "    Return details about all commands.",
                "COUNT",
                "    Return the total number of commands in this server.",
                "LIST [FILTERBY PATTERN <pattern>]",
                "    Return a list of all commands in this server.",
                "INFO [<command-name> ...]",
                "    Return details about multiple commands.",
                "DOCS [<command-name> ...]",
                "    Return documentation details about multiple commands.",
                "GETKEYS <full-command>",
                "    Return the keys from a full command.",
                "HELP",
                "    Print this help.",
            ],
        );
    } else {
        return Err(CmdError::UnknownSubcommand(String::from_utf8_lossy(sub).into_owned(), "COMMAND"));
    }
    Ok(())
}
