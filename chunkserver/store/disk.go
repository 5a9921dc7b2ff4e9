package store

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/dockyard/dockyard/chunkserver"
)

// Disk keeps each shard in a file of its own under dir/shards/XX/, where XX is
// the low byte of the name's xxhash64 in hex. A file per shard keeps deletes
// and repairs trivial (unlink, rename) and lets the kernel's page cache and
// readahead do the buffering; 256 fan-out directories keep directories small
// (4,000 entries each at a million shards) so lookups stay fast on ext4/xfs.
//
// File format (all integers little-endian):
//
//	header  64 bytes: "DYSHARD1" | version u32 (1 or 2) | block size u32 |
//	        data size u64 | shard xxhash64 u64 | 24 zero bytes |
//	        xxhash64 of the preceding 56 bytes
//	padding version 2 only: zero bytes up to offset 4096
//	data    the shard's bytes, at offset 64 (version 1) or 4096 (version 2)
//	trailer one xxhash64 u64 per BlockSize block of data (the last may be short)
//
// Versions 3 and 4 are versions 1 and 2 encrypted (WithEncryption, see
// encrypt.go): the header's shard checksum is masked, its first 24 zero
// bytes hold the salt (16 bytes) and the master key's fingerprint (8), the
// data is AES-256-GCM ciphertext of the same length, and the trailer holds
// one 16-byte GCM tag per block instead of its xxhash64.
//
// The data sits at a fixed offset, so a ranged read is one pread for the
// blocks it touches and one for their checksums; the header's own checksum
// catches a damaged header before its size is trusted. Shards of
// alignFrom bytes or more are written as version 2, whose data starts on a
// page boundary: writing 1 MiB at offset 64 cost the kernel 40-90% more
// system time than writing it page-aligned (every page of the data straddles
// two of the file's pages), and the write of shards into the page cache is
// the largest single cost of a push. Small shards stay version 1, where 4 KiB
// of padding would be a large share of the file. Both versions are read. Recently read files
// stay open (see handleCache), so a read makes no open or close, and a Put
// writes the whole file with one writev.
//
// Durability (fsync policy): Put writes the whole file under a temporary name
// in the target directory, makes it durable, renames it over the final name
// and makes the rename durable, so a Put that returned nil survives power loss
// and a crash never leaves a half-written shard under a real name. Each Put
// fsyncs its file and then its directory; with WithGroupCommit both steps are
// instead flushes of the whole file system shared by every Put waiting at the
// time (see syncGroup). Delete unlinks
// without fsyncing the directory: a delete lost in a crash only resurrects a
// shard the metaserver no longer references, which it deletes again through
// heartbeat replies. Temporary files left by a crash are removed by OpenDisk.
//
// PutBuffered (see buffered.go) writes and renames the file the same way but
// flushes neither: it starts the file's writeback and remembers the shard
// until a Sync, or the background flush every FlushInterval, makes it
// durable. A crash before then leaves such a shard whole, absent or
// detectably damaged, as described next.
//
// WithoutSync drops both flushes, for deployments that accept losing the last
// seconds of writes of a machine that loses power. After such a crash a shard
// is whole, absent, or detectably damaged (the header, size and block checks
// catch data the kernel had not written yet), so the damage is a missing or
// corrupt shard the metaserver rebuilds from the rest of its chunk, as long as
// no more than M servers of a chunk lose power together. Single-writer Puts
// run several times faster without fsync (see docs/benchmarks.md).
type Disk struct {
	dir    string
	limit  int64 // configured capacity, math.MaxInt64 when unlimited
	noSync bool
	packed bool  // write every shard as version 1 (WithPackedFormat)
	keys   *Keys // encrypt shards at rest (WithEncryption); nil: plaintext
	// groupCommit makes Puts share file-system flushes (see syncGroup)
	// instead of fsyncing their own file and directory.
	groupCommit bool
	group       *syncGroup // set with groupCommit (and syncfs) unless noSync

	// Buffered Puts (see buffered.go).
	flushEvery     time.Duration // background flush interval; <= 0: none
	onFlushError   func(error)   // told of background flush failures
	earlyWriteback bool          // start a buffered file's writeback at once
	syncFile       func(*os.File) error
	rounds         *syncGroup // Sync rounds: flushes of the unsynced set
	stopFlush      chan struct{}
	flushDone      chan struct{}

	// locks serialise the file-system step and the index update of Put and
	// Delete per name, so the index always matches the file that won.
	locks [64]sync.Mutex

	mu       sync.RWMutex
	index    map[string]diskEntry
	used     int64  // bytes of committed shard files
	reserved int64  // bytes of Puts in flight
	gen      uint64 // last generation given to a Put
	closed   bool
	// unsynced holds the shards PutBuffered acknowledged that no flush
	// has made durable yet, by the generation of the Put that wrote them.
	unsynced map[string]uint64

	handles *handleCache

	// The file system's free space as of the last statfs, and d.used then
	// (see capacityLocked).
	freeMu   sync.Mutex
	freeTTL  time.Duration // freeSpaceTTL; tests lengthen it
	freeAt   time.Time
	freeSeen int64
	usedSeen int64
}

type diskEntry struct {
	size    int64  // data bytes
	sum     uint64 // whole-shard checksum
	file    int64  // bytes the file occupies (header + data + trailer)
	corrupt bool   // header failed its checksum when the store was opened
	gen     uint64 // which Put wrote the file (0: there when the store opened)
}

// HeaderSize is the length of a shard file's header.
const HeaderSize = 64

const (
	// formatPacked (version 1) puts the data right after the header.
	formatPacked = 1
	// formatAligned (version 2) puts the data at alignedDataOffset.
	formatAligned = 2
	// alignedDataOffset is where version 2 data starts: one page in.
	alignedDataOffset = 4096
	// alignFrom is the smallest shard written as version 2.
	alignFrom = 256 << 10
	tmpMarker = ".tmp."
)

// headerPad is the zero padding between a version 2 header and its data.
var headerPad [alignedDataOffset - HeaderSize]byte

var diskMagic = [8]byte{'D', 'Y', 'S', 'H', 'A', 'R', 'D', '1'}

var _ Store = (*Disk)(nil)

// DiskOption tunes OpenDisk.
type DiskOption func(*Disk)

// WithPackedFormat makes Puts write every shard as version 1 (data right
// after the header), as stores did before version 2; for tests and for
// measuring what the alignment saves.
func WithPackedFormat() DiskOption { return func(d *Disk) { d.packed = true } }

// WithoutSync makes Put skip fsync; see Disk for what that risks.
func WithoutSync() DiskOption { return func(d *Disk) { d.noSync = true } }

// WithGroupCommit makes concurrent Puts share flushes of the whole file
// system (syncfs, Linux only; elsewhere it is ignored) instead of each
// fsyncing its own file and directory: the same durability for about a
// third less CPU per byte written, but every flush also writes back whatever
// other programs left dirty on that file system, and stalls their writes
// meanwhile. Only for a disk the chunkservers have to themselves; see
// docs/chunkserver.md for the figures on both sides.
func WithGroupCommit() DiskOption { return func(d *Disk) { d.groupCommit = true } }

// OpenDisk opens (creating if needed) a disk store in dir holding at most
// capacity bytes of shard files (0 = as much as the file system has). It
// indexes the shards already there and removes temporary files a crash left.
func OpenDisk(dir string, capacity int64, opts ...DiskOption) (*Disk, error) {
	if capacity <= 0 {
		capacity = math.MaxInt64
	}
	d := &Disk{
		dir:            filepath.Join(dir, "shards"),
		limit:          capacity,
		index:          make(map[string]diskEntry),
		unsynced:       make(map[string]uint64),
		handles:        newHandleCache(maxOpenShards),
		flushEvery:     DefaultFlushInterval,
		earlyWriteback: true,
		syncFile:       syncData,
		freeTTL:        freeSpaceTTL,
	}
	for _, o := range opts {
		o(d)
	}
	d.rounds = &syncGroup{f: bufferedFlusher{d}}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return nil, fmt.Errorf("opening shard store: %w", err)
	}
	for i := range 256 {
		if err := os.MkdirAll(filepath.Join(d.dir, fmt.Sprintf("%02x", i)), 0o755); err != nil {
			return nil, fmt.Errorf("opening shard store: %w", err)
		}
	}
	// The marker is read first, so a store whose key is missing fails
	// before its shards are walked.
	m, err := d.readMarker()
	if err != nil {
		return nil, fmt.Errorf("opening shard store %s: %w", dir, err)
	}
	if m != nil && d.keys == nil {
		return nil, fmt.Errorf("opening shard store %s: %w", dir, d.checkEncryption(m, loadStats{}))
	}
	st, err := d.load()
	if err != nil {
		return nil, fmt.Errorf("opening shard store %s: %w", dir, err)
	}
	if err := d.checkEncryption(m, st); err != nil {
		return nil, fmt.Errorf("opening shard store %s: %w", dir, err)
	}
	if !d.noSync && d.groupCommit && groupCommit {
		g, err := joinGroup(d.dir)
		if err != nil {
			return nil, fmt.Errorf("opening shard store %s: %w", dir, err)
		}
		d.group = g
	}
	d.startFlusher()
	return d, nil
}

// load builds the in-memory index from the shard files' headers. A file whose
// header is damaged stays indexed as corrupt, so reads fail with ErrCorrupt
// and the scrubber reports it, instead of the shard silently vanishing.
func (d *Disk) load() (loadStats, error) {
	st := loadStats{byKey: map[[8]byte]int{}, unknown: map[[8]byte]int{}}
	subs, err := os.ReadDir(d.dir)
	if err != nil {
		return st, err
	}
	for _, sub := range subs {
		if !sub.IsDir() {
			continue
		}
		subdir := filepath.Join(d.dir, sub.Name())
		files, err := os.ReadDir(subdir)
		if err != nil {
			return st, err
		}
		for _, f := range files {
			path := filepath.Join(subdir, f.Name())
			if strings.Contains(f.Name(), tmpMarker) {
				if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
					return st, fmt.Errorf("removing leftover %s: %w", path, err)
				}
				continue
			}
			if !chunkserver.ValidName(f.Name()) || f.IsDir() {
				continue // not ours; leave it alone
			}
			e, hdr, err := d.readEntry(f.Name(), path)
			if err != nil {
				return st, err
			}
			switch {
			case e.corrupt:
			case !hdr.enc:
				st.plain++
			default:
				st.byKey[hdr.fp]++
				if d.keys == nil {
					break
				}
				if _, ok := d.keys.byFingerprint(hdr.fp); !ok {
					st.unknown[hdr.fp]++
				}
			}
			d.index[f.Name()] = e
			d.used += e.file
		}
	}
	return st, nil
}

// readEntry indexes the shard file at path from its header. An encrypted
// shard's checksum is unmasked when the store holds its key.
func (d *Disk) readEntry(name, path string) (diskEntry, shardHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return diskEntry{}, shardHeader{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return diskEntry{}, shardHeader{}, err
	}
	hdr, ok, err := readHeader(f)
	if err != nil {
		return diskEntry{}, shardHeader{}, err
	}
	if !ok || fi.Size() != hdr.fileSize() {
		return diskEntry{file: fi.Size(), corrupt: true}, shardHeader{}, nil
	}
	sum := hdr.sum
	if hdr.enc && d.keys != nil {
		if key, ok := d.keys.byFingerprint(hdr.fp); ok {
			_, mask, err := fileKeys(key, hdr.salt)
			if err != nil {
				return diskEntry{}, shardHeader{}, err
			}
			sum = hdr.sum ^ mask
		}
	}
	return diskEntry{size: hdr.size, sum: sum, file: fi.Size()}, hdr, nil
}

// dataOffset is where a Put places the data of a shard of size bytes.
func (d *Disk) dataOffset(size int64) int64 {
	if d.packed || size < alignFrom {
		return HeaderSize
	}
	return alignedDataOffset
}

// ShardDataOffset returns where the data of the shard file at path starts,
// from its header; tests damage shards at known data offsets with it.
func ShardDataOffset(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	hdr, ok, err := readHeader(f)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%s: header: %w", path, ErrCorrupt)
	}
	return hdr.off, nil
}

// encodeHeader fills h, HeaderSize bytes, with the header hdr describes;
// hdr.off is HeaderSize or alignedDataOffset, hdr.sum as stored.
func encodeHeader(h []byte, hdr shardHeader) {
	var version uint32
	switch {
	case hdr.off == alignedDataOffset && hdr.enc:
		version = formatAlignedEncrypted
	case hdr.off == alignedDataOffset:
		version = formatAligned
	case hdr.enc:
		version = formatPackedEncrypted
	default:
		version = formatPacked
	}
	copy(h, diskMagic[:])
	binary.LittleEndian.PutUint32(h[8:], version)
	binary.LittleEndian.PutUint32(h[12:], BlockSize)
	binary.LittleEndian.PutUint64(h[16:], uint64(hdr.size))
	binary.LittleEndian.PutUint64(h[24:], hdr.sum)
	clear(h[32:56])
	if hdr.enc {
		copy(h[32:48], hdr.salt[:])
		copy(h[48:56], hdr.fp[:])
	}
	binary.LittleEndian.PutUint64(h[56:], xxhash.Sum64(h[:56]))
}

// readHeader reads the header of the open shard file f and checks it as
// parseHeader does; a file too short to hold one is not ok, not an error.
func readHeader(f *os.File) (hdr shardHeader, ok bool, err error) {
	var buf [HeaderSize]byte
	if _, err := f.ReadAt(buf[:], 0); err != nil && !errors.Is(err, io.EOF) {
		return shardHeader{}, false, err
	}
	hdr, ok = parseHeader(buf[:])
	return hdr, ok, nil
}

// parseHeader checks a shard file's header and returns what it says.
func parseHeader(h []byte) (hdr shardHeader, ok bool) {
	if len(h) < HeaderSize || [8]byte(h[:8]) != diskMagic ||
		binary.LittleEndian.Uint64(h[56:]) != xxhash.Sum64(h[:56]) ||
		binary.LittleEndian.Uint32(h[12:]) != BlockSize {
		return shardHeader{}, false
	}
	switch binary.LittleEndian.Uint32(h[8:]) {
	case formatPacked:
		hdr.off = HeaderSize
	case formatAligned:
		hdr.off = alignedDataOffset
	case formatPackedEncrypted:
		hdr.off, hdr.enc = HeaderSize, true
	case formatAlignedEncrypted:
		hdr.off, hdr.enc = alignedDataOffset, true
	default:
		return shardHeader{}, false
	}
	hdr.size = int64(binary.LittleEndian.Uint64(h[16:]))
	if hdr.size < 0 {
		return shardHeader{}, false
	}
	hdr.sum = binary.LittleEndian.Uint64(h[24:])
	if hdr.enc {
		hdr.salt = [16]byte(h[32:48])
		hdr.fp = [8]byte(h[48:56])
	}
	return hdr, true
}

// Path returns the file holding shard name. Tests use it to damage a shard the
// way a failing disk would; nothing else should touch the file.
func (d *Disk) Path(name string) string {
	return filepath.Join(d.dir, fmt.Sprintf("%02x", byte(xxhash.Sum64String(name))), name)
}

func (d *Disk) lockFor(name string) *sync.Mutex {
	return &d.locks[xxhash.Sum64String(name)%uint64(len(d.locks))]
}

// capacityLocked is the smaller of the configured limit and what the file
// system can still hold on top of what the store already uses. Call it with
// d.mu held (read or write).
func (d *Disk) capacityLocked() (int64, error) {
	d.freeMu.Lock()
	defer d.freeMu.Unlock()
	if now := time.Now(); d.freeAt.IsZero() || now.Sub(d.freeAt) >= d.freeTTL {
		free, err := freeBytes(d.dir)
		if err != nil {
			return 0, fmt.Errorf("statfs %s: %w", d.dir, err)
		}
		d.freeSeen, d.usedSeen, d.freeAt = free, d.used, now
	}
	// Our own Puts and Deletes move bytes between used and free, so their
	// sum as of the last statfs still holds; only other writers to the file
	// system can make it stale, for at most d.freeTTL, and the file
	// system's own ENOSPC (ErrNoSpace) catches what they took meanwhile.
	if d.freeSeen > math.MaxInt64-d.usedSeen {
		return d.limit, nil
	}
	return min(d.limit, d.usedSeen+d.freeSeen), nil
}

// freeSpaceTTL is how long a statfs answer stands in for the free space.
// Asking on every Put cost a system call per shard (1,536 per pushed GiB at
// 4+2 with 1 MiB shards) for a figure that only other programs change.
const freeSpaceTTL = time.Second

// Put implements Store.
func (d *Disk) Put(name string, data []byte) (uint64, error) { return d.put(name, data, false) }

// put writes shard name; buffered leaves both flushes to a later Sync.
func (d *Disk) put(name string, data []byte, buffered bool) (uint64, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	// Header and trailer share one pooled buffer: the header is filled in
	// by writeTemp, the trailer's block checksums are computed straight
	// into it.
	hdr := shardHeader{size: int64(len(data)), off: d.dataOffset(int64(len(data))), sum: chunkserver.Sum(data), enc: d.keys != nil}
	need := hdr.fileSize()
	mp := getMeta(HeaderSize + int(hdr.entrySize())*numBlocks(hdr.size))
	defer metaBufs.Put(mp)
	meta := *mp
	sum := hdr.sum
	if hdr.enc {
		// The trailer gets the blocks' tags, the file the ciphertext.
		key := d.keys.Primary()
		hdr.salt, hdr.fp = newSalt(), d.keys.primaryFP
		c, err := deriveCipher(key, hdr.salt)
		if err != nil {
			return 0, fmt.Errorf("put %s: %w", name, err)
		}
		hdr.sum ^= c.mask
		c.bind(name, hdr)
		ctp := getCT(len(data))
		defer ctBufs.Put(ctp)
		c.seal(*ctp, meta[HeaderSize:], data)
		data = *ctp
	} else {
		putBlockSums(meta[HeaderSize:], data)
	}

	// Reserve the space first so concurrent Puts cannot together overshoot
	// the limit. A replaced shard's bytes are credited, so rewriting a shard
	// in place works on a store at its limit; the moment both files coexist
	// is covered by the file system's own ENOSPC, which becomes ErrNoSpace.
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return 0, ErrClosed
	}
	capacity, err := d.capacityLocked()
	if err != nil {
		d.mu.Unlock()
		return 0, err
	}
	old := d.index[name].file
	if d.used+d.reserved+need-old > capacity {
		d.mu.Unlock()
		return 0, fmt.Errorf("put %s: %d bytes, %d of %d used: %w", name, len(data), d.used+d.reserved, capacity, ErrNoSpace)
	}
	d.reserved += need
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.reserved -= need
		d.mu.Unlock()
	}()

	final := d.Path(name)
	tmp, err := d.writeTemp(final, data, meta, hdr, buffered)
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", name, err)
	}
	// The data must be durable before the rename can make it visible, so a
	// crash never leaves a shard under its name whose bytes never reached
	// the disk.
	if d.group != nil && !buffered {
		if err := d.group.wait(); err != nil {
			_ = os.Remove(tmp)
			return 0, fmt.Errorf("put %s: %w", name, noSpace(err))
		}
	}
	l := d.lockFor(name)
	l.Lock()
	defer l.Unlock()
	if err := renameFile(tmp, final); err != nil {
		_ = os.Remove(tmp)
		return 0, fmt.Errorf("put %s: %w", name, err)
	}
	// The rename is only durable once the directory is; until then a crash
	// could bring back the old shard (or none) after we acknowledged.
	var serr error
	switch {
	case buffered:
	case d.group != nil:
		serr = noSpace(d.group.wait())
	case !d.noSync:
		serr = syncDir(filepath.Dir(final))
	}
	if serr != nil {
		// Not acknowledged, so not kept: the file already replaced any
		// older shard of this name, and leaving it unindexed would hide
		// it from reads, usage and deletes alike.
		d.drop(name)
		return 0, fmt.Errorf("put %s: %w", name, serr)
	}
	d.mu.Lock()
	d.used += need - d.index[name].file
	d.gen++
	d.index[name] = diskEntry{size: int64(len(data)), sum: sum, file: need, gen: d.gen}
	if buffered && !d.noSync {
		d.unsynced[name] = d.gen
	} else {
		// A durable Put made its own file and rename durable, and the
		// buffered file it replaced is gone.
		delete(d.unsynced, name)
	}
	d.mu.Unlock()
	// A cached handle to the file just replaced would be refused by its
	// generation anyway; dropping it now frees the descriptor.
	d.handles.invalidate(name)
	return sum, nil
}

// renameFile is os.Rename without the Lstat of the new name that os.Rename
// makes first, to refuse replacing a directory with a file: a shard name is
// never a directory, and the Lstat was one more system call per Put.
func renameFile(from, to string) error {
	for {
		err := syscall.Rename(from, to)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
		}
		return nil
	}
}

// drop removes shard name's file and index entry after a Put that renamed
// its file into place but could not make that durable. Called with the
// name's lock held.
func (d *Disk) drop(name string) {
	_ = os.Remove(d.Path(name))
	d.mu.Lock()
	d.used -= d.index[name].file
	delete(d.index, name)
	delete(d.unsynced, name)
	d.mu.Unlock()
	d.handles.invalidate(name)
}

// writeTemp writes and fsyncs the shard file under a temporary name next to
// final and returns that name; on any failure it removes the file. meta holds
// HeaderSize bytes for the header, then the encoded trailer; the data goes at
// hdr.off. A buffered file is not fsynced; its writeback is started instead.
func (d *Disk) writeTemp(final string, data, meta []byte, hdr shardHeader, buffered bool) (path string, err error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	path = final + tmpMarker + hex.EncodeToString(rnd[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", noSpace(err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(path)
		}
	}()
	encodeHeader(meta[:HeaderSize], hdr)
	if err := writeParts(f, meta[:HeaderSize], headerPad[:hdr.off-HeaderSize], data, meta[HeaderSize:]); err != nil {
		return "", noSpace(err)
	}
	switch {
	case d.noSync:
	case buffered:
		if d.earlyWriteback {
			// The disk starts on the bytes while the client sends the
			// next shards, so a later Sync finds most of them written.
			// Only a hint: a failure here shows up at that Sync.
			_ = startWriteback(f)
		}
	case d.group == nil:
		if err := f.Sync(); err != nil {
			return "", noSpace(err)
		}
	}
	if err := f.Close(); err != nil {
		return "", noSpace(err)
	}
	return path, nil
}

// metaBufs holds the header-and-trailer buffers of Puts in flight: 192 bytes
// for a 1 MiB shard, allocated once instead of twice per Put.
var metaBufs = sync.Pool{New: func() any { b := make([]byte, 0, HeaderSize+8*16); return &b }}

// getMeta returns a pooled buffer of n bytes; put it back in metaBufs.
func getMeta(n int) *[]byte {
	bp := metaBufs.Get().(*[]byte)
	if cap(*bp) < n {
		*bp = make([]byte, n)
	}
	*bp = (*bp)[:n]
	return bp
}

// putBlockSums writes the xxhash64 of each BlockSize block of data into dst,
// encoded as the on-disk trailer.
func putBlockSums(dst, data []byte) {
	for i := range numBlocks(int64(len(data))) {
		lo := i * BlockSize
		hi := min(lo+BlockSize, len(data))
		binary.LittleEndian.PutUint64(dst[8*i:], xxhash.Sum64(data[lo:hi]))
	}
}

// noSpace turns the file system's "disk full" and "quota exceeded" into
// ErrNoSpace, which the server answers with 507.
func noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

func (d *Disk) entry(name string) (diskEntry, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return diskEntry{}, ErrClosed
	}
	e, ok := d.index[name]
	if !ok {
		return diskEntry{}, ErrNotFound
	}
	return e, nil
}

// ReadAt implements Store.
func (d *Disk) ReadAt(name string, p []byte, off int64) (int, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	e, err := d.entry(name)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", name, err)
	}
	h, err := d.open(name, e.gen)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", name, err)
	}
	defer d.handles.release(h)
	f := h.f
	// The header is read from the open file rather than taken from the
	// index, so size and blocks come from the same file even if a Put
	// replaces the shard meanwhile; reading it every time (one pread of a
	// cached page) also catches a header damaged since the file was opened.
	hdr, ok, err := readHeader(f)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", name, err)
	}
	if !ok {
		return 0, fmt.Errorf("read %s: header: %w", name, ErrCorrupt)
	}
	size, dataOff := hdr.size, hdr.off
	n, eof := readSpan(size, len(p), off)
	if n == 0 {
		return 0, eof
	}
	var c *shardCipher
	if hdr.enc {
		if c, err = d.cipherFor(h, name, hdr); err != nil {
			return 0, fmt.Errorf("read %s: %w", name, err)
		}
	}
	first, last := off/BlockSize, (off+int64(n)-1)/BlockSize
	lo, hi := first*BlockSize, min((last+1)*BlockSize, size)

	es := hdr.entrySize()
	sums := make([]byte, es*(last-first+1))
	if err := chunkserver.ReadFullAt(f, sums, dataOff+size+es*first); err != nil {
		return 0, fmt.Errorf("read %s: checksums: %w", name, err)
	}
	// Read straight into p when the request is block-aligned, the common
	// case of whole-shard and large sequential reads; otherwise through a
	// buffer covering the whole blocks.
	var buf []byte
	switch {
	case lo == off && hi == off+int64(n):
		buf = p[:n]
	case hi-lo <= 2*BlockSize:
		// Small unaligned reads (FUSE asks for 4-128 KiB) reuse a buffer
		// instead of allocating and zeroing up to 128 KiB each time.
		bp := smallBufs.Get().(*[]byte)
		defer smallBufs.Put(bp)
		buf = (*bp)[:hi-lo]
	default:
		buf = make([]byte, hi-lo)
	}
	if err := chunkserver.ReadFullAt(f, buf, dataOff+lo); err != nil {
		return 0, fmt.Errorf("read %s: %w", name, err)
	}
	var bad int64
	if c != nil {
		bad = c.open(buf, buf, sums, first) // in place
	} else {
		bad = chunkserver.BadBlock(buf, BlockSize, sums)
	}
	if bad >= 0 {
		if &buf[0] == &p[0] {
			clear(p[:n]) // never hand back bytes that failed their checksum
		}
		return 0, fmt.Errorf("read %s: block %d: %w", name, first+bad, ErrCorrupt)
	}
	if &buf[0] != &p[0] {
		copy(p, buf[off-lo:])
	}
	return n, eof
}

// open returns a read handle on shard name as of index generation gen, from
// the cache or freshly opened; release it with d.handles.release.
func (d *Disk) open(name string, gen uint64) (*shardHandle, error) {
	if h := d.handles.get(name, gen); h != nil {
		return h, nil
	}
	f, err := os.Open(d.Path(name))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	return d.cache(name, gen, f), nil
}

// cache adds f, opened for shard name at generation gen, to the handle cache
// and returns its handle. If a Delete or Put got in between the index lookup
// and the insert, its invalidation may have run before the insert; checking
// the index again afterwards drops such a handle at once, so it can never pin
// a deleted file's blocks until evicted.
func (d *Disk) cache(name string, gen uint64, f *os.File) *shardHandle {
	h := d.handles.add(name, gen, f)
	if e, err := d.entry(name); err != nil || e.gen != gen {
		d.handles.invalidate(name)
	}
	return h
}

var smallBufs = sync.Pool{New: func() any { b := make([]byte, 2*BlockSize); return &b }}

// Stat implements Store.
func (d *Disk) Stat(name string) (chunkserver.ShardInfo, error) {
	if err := checkName(name); err != nil {
		return chunkserver.ShardInfo{}, err
	}
	e, err := d.entry(name)
	if err != nil {
		return chunkserver.ShardInfo{}, fmt.Errorf("stat %s: %w", name, err)
	}
	if e.corrupt {
		return chunkserver.ShardInfo{}, fmt.Errorf("stat %s: header: %w", name, ErrCorrupt)
	}
	return chunkserver.ShardInfo{Size: e.size, Sum: e.sum}, nil
}

// Delete implements Store.
func (d *Disk) Delete(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	l := d.lockFor(name)
	l.Lock()
	defer l.Unlock()
	if _, err := d.entry(name); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	if err := os.Remove(d.Path(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	d.mu.Lock()
	d.used -= d.index[name].file
	delete(d.index, name)
	delete(d.unsynced, name)
	d.mu.Unlock()
	// Without this a cached handle would keep the unlinked file's blocks
	// allocated until evicted.
	d.handles.invalidate(name)
	return nil
}

// Walk implements Store. A shard whose header is damaged is passed to fn with
// a zero ShardInfo; reading it returns ErrCorrupt.
func (d *Disk) Walk(fn func(name string, info chunkserver.ShardInfo) error) error {
	d.mu.RLock()
	if d.closed {
		d.mu.RUnlock()
		return ErrClosed
	}
	names := make([]string, 0, len(d.index))
	for name := range d.index {
		names = append(names, name)
	}
	d.mu.RUnlock()
	slices.Sort(names)
	for _, name := range names {
		e, err := d.entry(name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(name, chunkserver.ShardInfo{Size: e.size, Sum: e.sum}); err != nil {
			return err
		}
	}
	return nil
}

// Usage implements Store.
func (d *Disk) Usage() (Usage, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return Usage{}, ErrClosed
	}
	capacity, err := d.capacityLocked()
	if err != nil {
		return Usage{}, err
	}
	return Usage{Capacity: capacity, Used: d.used, Shards: len(d.index)}, nil
}

// Close implements Store. It flushes the buffered shards, so a clean
// shutdown loses none, and returns that flush's error; cached read handles
// are closed (those being read, once their reads finish).
func (d *Disk) Close() error {
	d.mu.Lock()
	already := d.closed
	d.closed = true
	d.mu.Unlock()
	if already {
		return nil
	}
	d.stopFlusher()
	var errs []error
	if d.Unsynced() > 0 {
		errs = append(errs, d.rounds.wait())
	}
	d.handles.close()
	if d.group != nil {
		errs = append(errs, d.group.leave())
	}
	return errors.Join(errs...)
}
