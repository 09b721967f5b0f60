//! Symbolization of kernel text addresses through `/proc/kallsyms`.
//!
//! Drop events carry the kernel address that freed the packet (the
//! `location` of `kfree_skb`); a person needs `nft_do_chain+0x3a4
//! [nf_tables]`, not `0xffffffffc0a1b3a4`. kallsyms lists symbol start
//! addresses only, so an address is attributed to the nearest text symbol at
//! or below it.
//!
//! Without the privilege to see addresses (`kptr_restrict`, or not root) the
//! kernel prints every address as zero; that is reported through
//! [`Kallsyms::is_restricted`] instead of as an error, so callers can still run
//! and print raw addresses.

use std::fmt;

/// Where the kernel lists its symbols.
pub const KALLSYMS_PATH: &str = "/proc/kallsyms";

/// Offsets beyond this from the nearest symbol are treated as unknown.
/// kallsyms has no symbol sizes, and an address in a gap (between sections,
/// or past the last module) would otherwise be blamed on whichever function
/// precedes it. The largest kernel functions are tens of KiB; section gaps
/// are around a MiB.
const MAX_OFFSET: u64 = 256 * 1024;

/// A resolved address: `name+0xoffset`, with ` [module]` when the symbol
/// belongs to a loadable module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub offset: u64,
    pub module: Option<String>,
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{:#x}", self.name, self.offset)?;
        if let Some(module) = &self.module {
            write!(f, " [{module}]")?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Entry {
    addr: u64,
    name: Box<str>,
    /// Index into `Kallsyms::modules` plus one; 0 means the kernel image.
    module: u32,
    /// Preference among symbols sharing an address; lower wins.
    rank: u8,
}

/// Text symbols of the running kernel, sorted by address.
#[derive(Debug, Default)]
pub struct Kallsyms {
    entries: Vec<Entry>,
    modules: Vec<String>,
    restricted: bool,
}

impl Kallsyms {
    /// Reads [`KALLSYMS_PATH`]. Zeroed addresses give an empty, restricted
    /// table, not an error.
    pub fn load() -> Result<Kallsyms, std::io::Error> {
        let bytes = std::fs::read(KALLSYMS_PATH)
            .map_err(|e| std::io::Error::new(e.kind(), format!("reading {KALLSYMS_PATH}: {e}")))?;
        Ok(Kallsyms::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// Parses kallsyms text (`<hex addr> <type> <name>[\t[module]]` lines).
    /// Lines that do not have that shape are ignored.
    pub fn parse(text: &str) -> Kallsyms {
        let mut table = Kallsyms::default();
        let mut saw_any = false;
        let mut saw_nonzero = false;
        for line in text.lines() {
            let mut fields = line.split_ascii_whitespace();
            let (Some(addr), Some(ty), Some(name)) = (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            saw_any = true;
            saw_nonzero |= addr != 0;
            // Only code can be a drop location; data symbols would only
            // shadow the function an address really belongs to.
            let rank = match ty {
                "T" => 0,
                "W" => 1,
                "t" => 2,
                "w" => 3,
                _ => continue,
            };
            if addr == 0 {
                continue;
            }
            let module = match fields
                .next()
                .and_then(|m| m.strip_prefix('[')?.strip_suffix(']'))
            {
                Some(m) => table.module_index(m),
                None => 0,
            };
            table.entries.push(Entry {
                addr,
                name: name.into(),
                module,
                rank,
            });
        }
        if saw_any && !saw_nonzero {
            table.restricted = true;
            table.entries.clear();
        }
        table.sort_and_dedup();
        table
    }

    /// True when the kernel hid the addresses (all zero), so nothing can be
    /// symbolized. Reading as root with `kptr_restrict` < 2 lifts this.
    pub fn is_restricted(&self) -> bool {
        self.restricted
    }

    /// Number of distinct text symbol addresses known.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no symbol is known (restricted, or empty input).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Start address of the text symbol `name`, if known. Only one name is
    /// kept per address, so an alias of a preferred name is not found.
    #[cfg(test)]
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| &*e.name == name)
            .map(|e| e.addr)
    }

    /// The symbol containing `addr`; `None` when restricted, below the first
    /// symbol, or implausibly far from the nearest one.
    pub fn symbolize(&self, addr: u64) -> Option<Symbol> {
        let idx = self.entries.partition_point(|e| e.addr <= addr);
        let entry = self.entries.get(idx.checked_sub(1)?)?;
        let offset = addr - entry.addr;
        if offset > MAX_OFFSET {
            return None;
        }
        let module = match entry.module {
            0 => None,
            m => self.modules.get(m as usize - 1).cloned(),
        };
        Some(Symbol {
            name: entry.name.to_string(),
            offset,
            module,
        })
    }

    fn module_index(&mut self, name: &str) -> u32 {
        // Symbols of one module are contiguous in kallsyms: check the last first.
        if let Some(pos) = self.modules.iter().rposition(|m| m == name) {
            return pos as u32 + 1;
        }
        self.modules.push(name.to_string());
        self.modules.len() as u32
    }

    /// Sorts by address and keeps one symbol per address. Among aliases the
    /// global one wins (it is the name people know), then the first listed.
    fn sort_and_dedup(&mut self) {
        // Stable sort: equal (addr, rank) keep their order in the file.
        self.entries.sort_by_key(|e| (e.addr, e.rank));
        self.entries.dedup_by_key(|e| e.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 t _local_alias
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81100000 t local_helper
ffffffff81100040 T kfree_skb_reason
ffffffff81100100 D some_data
ffffffff81100200 W weak_fn
ffffffffc0a00000 t nft_do_chain\t[nf_tables]
ffffffffc0a00400 t nft_other\t[nf_tables]
ffffffffc0b00000 T vxlan_rcv\t[vxlan]
not a line
";

    #[test]
    fn symbolizes_kernel_and_module_addresses() {
        let k = Kallsyms::parse(SAMPLE);
        assert!(!k.is_restricted());
        let s = k.symbolize(0xffffffff81100040 + 0x10).unwrap();
        assert_eq!(s.to_string(), "kfree_skb_reason+0x10");
        assert_eq!(s.module, None);
        let s = k.symbolize(0xffffffffc0a003a4).unwrap();
        assert_eq!(s.to_string(), "nft_do_chain+0x3a4 [nf_tables]");
        assert_eq!(
            k.symbolize(0xffffffffc0a00400).unwrap().to_string(),
            "nft_other+0x0 [nf_tables]"
        );
        assert_eq!(
            k.symbolize(0xffffffffc0b00001).unwrap().to_string(),
            "vxlan_rcv+0x1 [vxlan]"
        );
        // Data symbols are skipped: this is still inside kfree_skb_reason's range.
        assert_eq!(
            k.symbolize(0xffffffff81100180).unwrap().name,
            "kfree_skb_reason"
        );
        assert_eq!(k.symbolize(0xffffffff81100200).unwrap().name, "weak_fn");
        assert_eq!(k.symbolize(0xffffffff81000000).unwrap().name, "_stext");
        assert_eq!(
            k.symbolize(0xffffffff80ffffff),
            None,
            "below the first symbol"
        );
        assert_eq!(k.symbolize(0), None);
        assert_eq!(
            k.symbolize(0xffffffffc0b00000 + MAX_OFFSET + 1),
            None,
            "far past the last symbol"
        );
        assert_eq!(k.address_of("nft_other"), Some(0xffffffffc0a00400));
        assert_eq!(k.address_of("some_data"), None);
        assert_eq!(k.len(), 7);
    }

    #[test]
    fn zeroed_addresses_mean_restricted() {
        let k = Kallsyms::parse(
            "0000000000000000 T _stext\n0000000000000000 t nft_do_chain\t[nf_tables]\n",
        );
        assert!(k.is_restricted());
        assert!(k.is_empty());
        assert_eq!(k.symbolize(0xffffffff81000000), None);
        let empty = Kallsyms::parse("");
        assert!(!empty.is_restricted() && empty.is_empty());
    }

    #[test]
    fn real_kallsyms() {
        let k = match Kallsyms::load() {
            Ok(k) => k,
            Err(e) => {
                crate::testing::skip_test(&format!("cannot read {KALLSYMS_PATH}: {e}"));
                return;
            }
        };
        if k.is_restricted() {
            crate::testing::skip_test(&format!(
                "{KALLSYMS_PATH} addresses are hidden (not root or kptr_restrict=2)"
            ));
            return;
        }
        let name = ["kfree_skb", "sk_skb_reason_drop", "kfree_skb_reason"]
            .into_iter()
            .find(|n| k.address_of(n).is_some())
            .expect("a kfree_skb-family function in kallsyms");
        let addr = k.address_of(name).unwrap();
        let sym = k.symbolize(addr + 0x10).expect("symbolizes");
        println!("{} text symbols; {addr:#x}+0x10 -> {sym}", k.len());
        assert_eq!(sym.name, name);
        assert_eq!(sym.offset, 0x10);
    }
}
