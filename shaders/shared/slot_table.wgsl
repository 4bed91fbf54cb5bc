// shared/slot_table.wgsl — a workgroup-private hash table from slot to entry.
//
// Privatisation against skew: a workgroup first folds the events of its tile by slot in
// workgroup memory, then touches global memory once per distinct slot, so a hot key (Zipf) costs
// one global atomic per tile instead of one per event.
// Assumes: TABLE is a power of two, at least twice the tile size (load factor <= 1/2), and
// TABLE / WG entries are initialised per thread.

const WG: u32 = 256u;
const TILE: u32 = 1024u;      // events per workgroup (4 per thread)
const TABLE: u32 = 2048u;     // entries; 2 x 4 bytes each = 16 KiB of workgroup memory
const SKIP: u32 = 0xFFFFFFFFu;

var<workgroup> table_keys: array<atomic<u32>, TABLE>;
var<workgroup> table_vals: array<atomic<u32>, TABLE>;

fn table_clear(lid: u32) {
    for (var j = 0u; j < TABLE / WG; j = j + 1u) {
        atomicStore(&table_keys[lid + j * WG], SKIP);
        atomicStore(&table_vals[lid + j * WG], 0u);
    }
}

// The entry of `slot`, inserting it if absent (linear probing).
fn table_insert(slot: u32) -> u32 {
    var h = (slot * 2654435761u) >> 21u; // 11 bits: TABLE = 2048
    loop {
        let r = atomicCompareExchangeWeak(&table_keys[h], SKIP, slot);
        if (r.exchanged || r.old_value == slot) {
            break;
        }
        if (r.old_value != SKIP) {
            h = (h + 1u) & (TABLE - 1u);
        }
    }
    return h;
}
