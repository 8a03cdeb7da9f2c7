package gateway_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pushledger/pushledger/gateway"
	"github.com/pushledger/pushledger/gateway/wire"
)

// idleChildEnv, when set, makes the test binary a device process for
// BenchmarkIdleMemory instead of running tests: its value is
// "<server host:port> <first device index> <connections>" (runIdleChild).
const idleChildEnv = "PUSHLEDGER_GATEWAY_IDLE_CHILD"

func TestMain(m *testing.M) {
	if spec, ok := os.LookupEnv(idleChildEnv); ok {
		os.Exit(runIdleChild(spec, os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// runIdleChild is a device process: it waits for a line on stdin, opens
// the connections of spec, each a raw blocking socket that sends one
// CONNECT (plain TCP, a credential from Credentials.Issue) and never
// reads, writes "ready <n>" on stdout, and then holds them until stdin
// ends (the parent closed it, or died). It returns the exit code.
func runIdleChild(spec string, stdin io.Reader, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "idle device process %q: %v\n", spec, err)
		return 1
	}
	var addr string
	var first, n int
	if _, err := fmt.Sscan(spec, &addr, &first, &n); err != nil {
		return fail(err)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return fail(fmt.Errorf("server address %q: want IPv4 host:port", addr))
	}
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	if _, err := raiseFileLimit(); err != nil {
		return fail(err)
	}
	creds, err := gateway.NewCredentials(testCredentialKeys())
	if err != nil {
		return fail(err)
	}
	in := bufio.NewReader(stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return fail(fmt.Errorf("waiting for the start line: %w", err))
	}
	fds := make([]int, 0, n) // closed by the exit
	for i := first; i < first+n; i++ {
		device := fmt.Sprintf("idle-%d", i)
		fd, err := idleDevice(sa, device, creds.Issue(testApp, device))
		if err != nil {
			return fail(fmt.Errorf("connection %d of %d: %w", len(fds)+1, n, err))
		}
		fds = append(fds, fd)
	}
	fmt.Fprintf(stdout, "ready %d\n", len(fds))
	_, _ = io.Copy(io.Discard, in)
	return 0
}

// idleDevice connects a raw blocking socket and sends CONNECT; it does
// not wait for the CONNACK (the parent counts the server's online
// devices instead).
func idleDevice(sa *unix.SockaddrInet4, device string, cred []byte) (int, error) {
	hello, err := wire.AppendFrame(nil, &wire.Connect{AppKey: testApp, DeviceID: device, Credential: cred, SDKVersion: "bench/1"})
	if err != nil {
		return -1, err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect: %w", err)
	}
	for len(hello) > 0 {
		n, err := unix.Write(fd, hello)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("writing CONNECT: %w", err)
		}
		hello = hello[n:]
	}
	return fd, nil
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit and
// returns it.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("setrlimit: %w", err)
		}
	}
	return lim.Cur, nil
}

// deviceProcs are the device processes of one round. stop kills them, at
// most once; call it deferred as soon as the value exists, so that a
// failing benchmark does not leave them behind (a process whose parent
// died exits too: its stdin ends).
type deviceProcs struct {
	children []*idleChild
	stopped  bool
}

type idleChild struct {
	spec   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // the first line of stdout, or "" at its end
	stderr bytes.Buffer
}

// start starts procs device processes holding n connections to addr
// between them, each waiting for go.
func (p *deviceProcs) start(t testing.TB, addr string, n, procs int) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for i := range procs {
		first, last := n*i/procs, n*(i+1)/procs
		c := &idleChild{spec: fmt.Sprintf("%s %d %d", addr, first, last-first), lines: make(chan string, 1)}
		// The test flags keep a child that somehow missed the variable
		// from running the tests.
		c.cmd = exec.Command(exe, "-test.run=^$", "-test.bench=^$")
		c.cmd.Env = append(os.Environ(), idleChildEnv+"="+c.spec, "GOMAXPROCS=1")
		c.cmd.Stderr = &c.stderr
		if c.stdin, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := c.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.cmd.Start(); err != nil {
			c.stdin.Close()
			t.Fatalf("starting a device process: %v", err)
		}
		p.children = append(p.children, c)
		go func() {
			line, _ := bufio.NewReader(stdout).ReadString('\n')
			c.lines <- line
		}()
	}
}

// connect tells every process to open its connections and waits until
// each reports them open (then the server may still be reading the
// CONNECTs).
func (p *deviceProcs) connect(t testing.TB, timeout time.Duration) {
	t.Helper()
	for _, c := range p.children {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			t.Fatal(p.failure(c, err))
		}
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, c := range p.children {
		select {
		case line := <-c.lines:
			if !strings.HasPrefix(line, "ready ") {
				t.Fatal(p.failure(c, fmt.Errorf("exited before ready (stdout %q)", line)))
			}
		case <-deadline.C:
			t.Fatal(p.failure(c, fmt.Errorf("not ready after %v", timeout)))
		}
	}
}

// failure stops the processes and describes c's failure with its stderr.
func (p *deviceProcs) failure(c *idleChild, err error) error {
	p.stop()
	return fmt.Errorf("device process %q: %w; stderr: %s", c.spec, err, bytes.TrimSpace(c.stderr.Bytes()))
}

// stop kills the processes (their sockets close with them) and waits
// for them.
func (p *deviceProcs) stop() {
	if p.stopped {
		return
	}
	p.stopped = true
	for _, c := range p.children {
		c.stdin.Close()
		_ = c.cmd.Process.Kill()
	}
	for _, c := range p.children {
		_ = c.cmd.Wait()
	}
}

// TestDeviceProcs runs BenchmarkIdleMemory's device processes against a
// gateway, so the re-exec path stays working under go test.
func TestDeviceProcs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	const n, procs = 20, 2
	ts := startServer(t, testConfig(), nil, nil)
	var p deviceProcs
	defer p.stop()
	p.start(t, ts.addr, n, procs)
	p.connect(t, waitTimeout)
	eventually(t, "devices online", func() bool { return ts.Stats().Online == n })
	p.stop()
	eventually(t, "connections closed", func() bool { return ts.Stats().Connections == 0 })
}
