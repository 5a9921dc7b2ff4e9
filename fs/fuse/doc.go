// Package fuse mounts the Dockyard file system through the kernel's FUSE
// interface (hanwen/go-fuse/v2). It is a thin adapter: nodes embed fs.Inode,
// implement only the operations they need and turn every error into a
// syscall.Errno. Namespace operations go straight to the metaserver
// (fs.Client.Meta()); file bytes go through *fs.File. Anything that can be
// tested without a kernel mount belongs in package fs, not here.
//
// It must never hold state the metaserver does not also have, apart from
// caches that are safe to lose: a crashed mount loses nothing but the
// unflushed writes of files still open.
//
// # Decisions, and why
//
// Permissions: the mount uses the kernel's default_permissions, so mode,
// uid/gid, sticky-directory and supplementary-group checks are the kernel's own
// (the same code that guards ext4). Files are created with the caller's
// uid/gid; the metaserver applies setgid-directory inheritance.
//
// Open-unlinked files: a file that is unlinked (or renamed over) while this
// mount holds it open gets an extra hard link in a private orphan directory,
// /.dockyard/orphans/<host>-<pid>-<nonce>/<ino>, made before the unlink, and
// removed when the last handle is released. The alternative, making the
// metaserver track open handles per client, needs leases and session expiry in
// the FSM to be crash-safe; the orphan link needs nothing new, survives a
// metaserver failover, and a crashed mount's orphans are swept by the next
// mount on the same host (the directory name carries the pid). While such a
// link is held, the nlink this mount reports is reduced by one so fstat shows
// what POSIX promises (0 after the last name is gone). Only this mount's
// opens are protected: a file unlinked on one host while open on another is
// gone for both (as NFS answers ESTALE); closing that gap needs per-client
// open tracking in the metaserver.
//
// The reserved tree: /.dockyard holds the registry's blobs, layer indexes and
// the orphan directories. A mount of the whole namespace hides it: lookup
// answers ENOENT, listings skip it and renames onto it are refused, because the
// kernel's dentry cache is shared by all users and so cannot show it to root
// alone. Options.ShowReserved exposes it for operators.
//
// Caching and consistency: the kernel caches entries and attributes for
// EntryTimeout/AttrTimeout (1 s by default) and never caches negative lookups
// unless asked, so a file created on another mount is found at once. When the
// client's metadata cache (fs.MetaCache) follows the metaserver's change
// feed, lookups and getattrs are answered from it, the kernel keeps what it
// got for FeedTimeout (1 min) and other clients' changes are pushed to it as
// they arrive; see feed.go for why that is safe and what it costs. Opening
// a file fetches its inode afresh from the metaserver (close-to-open): when
// the content generation (Attr.Gen) is the one the kernel's page cache was
// filled from, the open keeps the page cache (FOPEN_KEEP_CACHE); otherwise the
// kernel drops it and is told that the cached size is stale.
// When the metadata cache drops itself the kernel is told to forget names,
// except those of files with cached pages that the metaserver confirms (see
// kernelFeed.invalidateAll): forgetting a name would cost the file its pages. Within one mount
// every open of an inode shares one *fs.File, so readers see the writes of
// other descriptors before they are flushed, as on a local disk.
//
// Data path: requests are up to 1 MiB (max_write, max_read) and the
// device's read-ahead is raised to 4 MiB, so a sequential stream costs few
// round trips and has several in flight. READ replies lend the client's
// cached blocks to go-fuse, which writes them to the kernel with one writev
// (no copy into a reply buffer); blocks a sequential reader consumed whole
// then leave the client's cache, since the kernel's page cache has them. The kernel's writeback cache is off: with it the kernel, not
// the metaserver, owns a file's size and mtime, which two hosts writing one
// file cannot agree on. Reads do not update atime (the mount is noatime):
// each would cost a Raft entry.
//
// Passthrough (Options.Passthrough, Linux 6.9+, root): the kernel keeps a
// FUSE file's page cache in 4 KiB pages only, and copying them out costs
// about twice what a local ext4 file in large folios does, so even a warm
// read through the mount runs at about half the local disk's rate. A file
// read whole from the start is therefore also written, as the READs return
// it, into a local copy (filecache.go: keyed by inode and content
// generation, bounded, least recently used dropped first, emptied at every
// mount). A later read-only open that finds the generation unchanged and no
// other handle of the file open is answered with FOPEN_PASSTHROUGH over the
// copy, and the kernel reads the local file without the mount. The kernel
// then refuses any open of the inode that is not passthrough, even a
// direct-I/O one; so while such readers are open, an open for writing or a
// truncate through this mount waits a second for them and then fails with
// ETXTBSY (passthrough.go). Files written through this mount are not copied
// while their pages are cached: their reads never reach the mount.
//
// Locks: POSIX and BSD locks are left to the kernel, which enforces them among
// the processes of this host only. Cluster-wide locks need a lock table in the
// metaserver with session leases; until then the mount does not pretend.
package fuse
