package hbone

import (
	"math/bits"
	"sync"
)

// Buffers for received DATA, frame building and copying come from
// power-of-two size classes, 1 KiB to 1 MiB, each with its own sync.Pool of
// *chunk (pointers, so Get and Put do not allocate).

const (
	minChunkShift = 10
	maxChunkShift = 20
	maxChunkSize  = 1 << maxChunkShift
)

// chunk is a pooled buffer: buf[off:] is the unread part.
type chunk struct {
	buf []byte
	off int
}

var chunkPools [maxChunkShift - minChunkShift + 1]sync.Pool

func chunkClass(n int) int {
	if n <= 1<<minChunkShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minChunkShift
}

// getChunk returns a chunk with len(buf) == 0 and cap(buf) >= n, n <= maxChunkSize.
func getChunk(n int) *chunk {
	cl := chunkClass(n)
	if c, ok := chunkPools[cl].Get().(*chunk); ok {
		return c
	}
	return &chunk{buf: make([]byte, 0, 1<<(cl+minChunkShift))}
}

// putChunk returns c to its pool; c must not be used afterwards.
func putChunk(c *chunk) {
	size := cap(c.buf)
	cl := chunkClass(size)
	if size != 1<<(cl+minChunkShift) || cl >= len(chunkPools) {
		return // not one of ours
	}
	c.buf = c.buf[:0]
	c.off = 0
	chunkPools[cl].Put(c)
}

// recvQueue is a FIFO of received DATA chunks. Its owner locks it.
type recvQueue struct {
	chunks []*chunk
	head   int
	n      int // unread bytes
}

func (q *recvQueue) push(c *chunk) {
	if q.head > 0 && len(q.chunks) == cap(q.chunks) {
		k := copy(q.chunks, q.chunks[q.head:])
		clear(q.chunks[k:])
		q.chunks = q.chunks[:k]
		q.head = 0
	}
	q.chunks = append(q.chunks, c)
	q.n += len(c.buf) - c.off
}

// tail returns the last chunk, for appending small payloads to it.
func (q *recvQueue) tail() *chunk {
	if q.head == len(q.chunks) {
		return nil
	}
	return q.chunks[len(q.chunks)-1]
}

func (q *recvQueue) pop() *chunk {
	if q.head == len(q.chunks) {
		return nil
	}
	c := q.chunks[q.head]
	q.chunks[q.head] = nil
	q.head++
	if q.head == len(q.chunks) {
		q.chunks = q.chunks[:0]
		q.head = 0
	}
	q.n -= len(c.buf) - c.off
	return c
}

// read copies buffered bytes into p, releasing drained chunks.
func (q *recvQueue) read(p []byte) int {
	n := 0
	for n < len(p) && q.head < len(q.chunks) {
		c := q.chunks[q.head]
		k := copy(p[n:], c.buf[c.off:])
		c.off += k
		n += k
		q.n -= k
		if c.off == len(c.buf) {
			putChunk(q.pop())
		}
	}
	return n
}

// reset releases every chunk.
func (q *recvQueue) reset() {
	for c := q.pop(); c != nil; c = q.pop() {
		putChunk(c)
	}
	q.n = 0
}
