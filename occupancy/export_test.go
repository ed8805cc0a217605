package occupancy

// The external tests (package occupancy_test, which may import buffer/) drive the
// engine over the tests' in-memory store too.

// MemStore is the tests' in-memory Store with the buffer's write side.
type MemStore = memStore

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return newMemStore() }

// GenTopology is genTopology: a random nested topology of n spaces and m DPUs.
var GenTopology = genTopology
