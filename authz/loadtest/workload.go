package loadtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/proto"

	"github.com/finauthz/authz/authz/devissuer"
	"github.com/finauthz/authz/authz/envoyreq"
)

// Class is a kind of request in the mix.
type Class int

// The classes of the mix, with the outcome each should get from the shipped policies.
const (
	// Valid: a valid token on a shipped open-banking route it is granted (accounts list, transactions of a
	// consented account, payment status). Expected: allowed.
	Valid Class = iota
	// Forbidden: a valid token asking for the transactions of an account it holds no consent for. Expected: 403.
	Forbidden
	// Invalid: an expired token, a token with a tampered signature, or one signed under a kid the issuer does
	// not publish, in turn. Expected: 401, without reaching the policy.
	Invalid
	// Public: GET /fx/rates without a token. Expected: allowed.
	Public
	numClasses
)

var classNames = [numClasses]string{"valid", "forbidden", "invalid", "public"}

func (c Class) String() string { return classNames[c] }

// Outcome is how the service answered one check.
type Outcome int

// The outcomes counted.
const (
	Allowed      Outcome = iota // CheckResponse status OK
	Denied                      // denied with any HTTP status but 401 (403 by default)
	Unauthorized                // denied with 401: an invalid or missing token, or step-up needed
	Failed                      // no CheckResponse: a gRPC error, a deadline, a malformed response
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"allowed", "denied", "401", "errors"}

func (o Outcome) String() string { return outcomeNames[o] }

// expected is the outcome each class gets from the shipped policies with minted tokens.
var expected = [numClasses]Outcome{Valid: Allowed, Forbidden: Denied, Invalid: Unauthorized, Public: Allowed}

// Mix is the share of each class in the requests sent, as relative weights: {80, 0, 10, 10} sends 80% valid, 10%
// invalid and 10% public requests. It is a [flag.Value] written "valid=80,invalid=10,public=10"; classes not
// named weigh 0.
type Mix [numClasses]int

// DefaultMix is 80% valid tokens, 10% invalid tokens, 10% public requests.
var DefaultMix = Mix{Valid: 80, Invalid: 10, Public: 10}

// String writes m as Set reads it.
func (m *Mix) String() string {
	var parts []string
	for c, w := range m {
		if w > 0 {
			parts = append(parts, classNames[c]+"="+strconv.Itoa(w))
		}
	}
	return strings.Join(parts, ",")
}

// Set parses "valid=80,forbidden=5,invalid=10,public=5". Every class not named weighs 0.
func (m *Mix) Set(s string) error {
	var out Mix
	for part := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		c := classOf(name)
		if !ok || c < 0 {
			return fmt.Errorf("mix: want class=weight with class one of %s, got %q", strings.Join(classNames[:], ", "), part)
		}
		w, err := strconv.Atoi(val)
		if err != nil || w < 0 {
			return fmt.Errorf("mix: %s: want a whole number, 0 or more, got %q", name, val)
		}
		out[c] = w
	}
	if err := out.validate(); err != nil {
		return err
	}
	*m = out
	return nil
}

func classOf(name string) Class {
	for c, n := range classNames {
		if n == name {
			return Class(c)
		}
	}
	return -1
}

func (m Mix) validate() error {
	total := 0
	for _, w := range m {
		if w < 0 {
			return errors.New("mix: weights must not be negative")
		}
		total += w
	}
	if total == 0 {
		return errors.New("mix: at least one class must weigh more than 0")
	}
	return nil
}

// WorkloadConfig describes the requests of a run. Exactly one of Issuer and Tokens supplies the tokens.
type WorkloadConfig struct {
	// Mix weighs the classes; the zero Mix selects DefaultMix.
	Mix Mix
	// Subjects is how many distinct subjects get a minted token (default 1000). Each token is used on three
	// routes, so the service sees 3×Subjects distinct valid requests.
	Subjects int
	// Issuer mints the tokens: it must be the development issuer the service trusts.
	Issuer *devissuer.Issuer
	// TTL is the lifetime of minted tokens (default 1h); it must outlast the run, or valid tokens turn into 401s.
	TTL time.Duration
	// Tokens are raw tokens to send instead of minted ones, each on the same routes as a minted token (the
	// transactions route only when its unverified payload has an accounts claim). Their claims are unknown, so
	// their answers are counted but not judged; invalid requests are these tokens tampered or re-signed under an
	// unknown kid (an expired token needs the issuer's key).
	Tokens []string
}

// Workload is a fixed sequence of pre-encoded CheckRequests in the proportions of a Mix, built once and replayed
// in order: request i of a run is entry i modulo its length. It is safe for concurrent use.
type Workload struct {
	seq []entry
	// judged reports, per class, whether its expected outcome is known.
	judged [numClasses]bool
	mix    Mix
}

type entry struct {
	req   *preEncoded
	class Class
}

// Len is the number of requests after which the sequence repeats.
func (w *Workload) Len() int { return len(w.seq) }

// Mix is the mix the workload was built with.
func (w *Workload) Mix() Mix { return w.mix }

// ReadTokens splits a file's content into tokens, one per line; blank lines and lines starting with "#" are
// skipped.
func ReadTokens(content []byte) ([]string, error) {
	var out []string
	for line := range strings.SplitSeq(string(content), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.Count(line, ".") != 2 {
			return nil, fmt.Errorf("tokens: line %d is not a compact JWS (three dot-separated parts)", len(out)+1)
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		return nil, errors.New("tokens: no token found")
	}
	return out, nil
}

// The routes of the shipped route table (policies/routes.yaml) that the mix uses.
const (
	apiBase       = "https://api.bank.test"
	routeAccounts = apiBase + "/accounts"
	routePublic   = apiBase + "/fx/rates"
	benchScopes   = "accounts:read transactions:read payments:read"
	unknownKID    = "loadtest-unknown-kid"
)

func transactionsURL(account string) string {
	return apiBase + "/accounts/" + account + "/transactions?from=2026-01-01&limit=50"
}

func paymentURL(i int) string { return apiBase + "/payments/pay-" + strconv.Itoa(i) }

// NewWorkload mints or takes the tokens, builds every request and interleaves them so that every window of
// sum(Mix) consecutive requests holds each class in its share.
func NewWorkload(cfg WorkloadConfig) (*Workload, error) {
	if cfg.Mix == (Mix{}) {
		cfg.Mix = DefaultMix
	}
	if err := cfg.Mix.validate(); err != nil {
		return nil, err
	}
	if (cfg.Issuer == nil) == (len(cfg.Tokens) == 0) {
		return nil, errors.New("loadtest: want either an issuer to mint tokens or tokens to send, not both")
	}
	b := builder{now: time.Now(), ttl: cfg.TTL}
	if b.ttl <= 0 {
		b.ttl = time.Hour
	}
	var err error
	if b.stranger, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, fmt.Errorf("loadtest: %w", err)
	}
	w := &Workload{mix: cfg.Mix, judged: [numClasses]bool{true, true, true, true}}
	var pools [numClasses][]*preEncoded
	if cfg.Issuer != nil {
		subjects := cfg.Subjects
		if subjects <= 0 {
			subjects = 1000
		}
		pools, err = b.minted(cfg.Issuer, subjects, cfg.Mix)
	} else {
		w.judged[Valid], w.judged[Forbidden] = false, false
		pools, err = b.fromTokens(cfg.Tokens, cfg.Mix)
	}
	if err != nil {
		return nil, err
	}
	w.seq = interleave(cfg.Mix, pools)
	return w, nil
}

// builder builds the requests of one workload.
type builder struct {
	now      time.Time
	ttl      time.Duration
	n        int               // requests built so far: numbers request ids and client ports
	stranger *ecdsa.PrivateKey // signs the unknown-kid tokens
}

// request builds and encodes one Envoy-shaped check of GET url, with a bearer token when tok is not empty.
func (b *builder) request(url, tok string) (*preEncoded, error) {
	b.n++
	ip := "203.0.113." + strconv.Itoa(1+b.n%250)
	headers := []string{
		"user-agent: bank-app/7.4.1 (iPhone; iOS 18.3)",
		"accept: application/json",
		"accept-encoding: gzip, br",
		"x-forwarded-for: " + ip,
		"x-forwarded-proto: https",
		"x-envoy-expected-rq-timeout-ms: 15000",
	}
	if tok != "" {
		headers = append(headers, "authorization: Bearer "+tok)
	}
	req, err := envoyreq.New(envoyreq.Request{
		URL:       url,
		Headers:   headers,
		Source:    ip + ":" + strconv.Itoa(40000+b.n%20000),
		RequestID: fmt.Sprintf("loadtest-%08d", b.n),
		Time:      b.now,
	})
	if err != nil {
		return nil, err
	}
	wire, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("loadtest: %w", err)
	}
	return newPreEncoded(wire), nil
}

// minted builds the pools from tokens minted for subjects cust-0 ... cust-(subjects-1), each consenting to two
// accounts. Only classes with a weight are built.
func (b *builder) minted(iss *devissuer.Issuer, subjects int, mix Mix) (pools [numClasses][]*preEncoded, err error) {
	mint := func(i int, now time.Time) (string, error) {
		sub := "cust-" + strconv.Itoa(i)
		return iss.Mint(devissuer.Claims{
			Subject:  sub,
			Scope:    benchScopes,
			ClientID: "tpp-" + strconv.Itoa(i%50),
			TTL:      b.ttl,
			Extra:    map[string]any{"accounts": []string{"acc-" + strconv.Itoa(i) + "-a", "acc-" + strconv.Itoa(i) + "-b"}},
		}, now)
	}
	add := func(c Class, url, tok string) error {
		r, err := b.request(url, tok)
		if err == nil {
			pools[c] = append(pools[c], r)
		}
		return err
	}
	for i := range subjects {
		if mix[Valid] > 0 || mix[Forbidden] > 0 {
			tok, err := mint(i, b.now)
			if err != nil {
				return pools, err
			}
			if mix[Valid] > 0 {
				for _, url := range []string{routeAccounts, transactionsURL("acc-" + strconv.Itoa(i) + "-a"), paymentURL(i)} {
					if err := add(Valid, url, tok); err != nil {
						return pools, err
					}
				}
			}
			if mix[Forbidden] > 0 {
				if err := add(Forbidden, transactionsURL("acc-"+strconv.Itoa(i+1)+"-a"), tok); err != nil {
					return pools, err
				}
			}
		}
		if mix[Invalid] > 0 {
			var tok string
			switch i % 3 {
			case 0: // expired: issued two hours ago, past exp and the leeway
				tok, err = mint(i, b.now.Add(-2*time.Hour-b.ttl))
			case 1:
				if tok, err = mint(i, b.now); err == nil {
					tok = tamper(tok)
				}
			case 2:
				if tok, err = mint(i, b.now); err == nil {
					tok, err = b.resign(tok)
				}
			}
			if err != nil {
				return pools, err
			}
			if err := add(Invalid, routeAccounts, tok); err != nil {
				return pools, err
			}
		}
	}
	if mix[Public] > 0 {
		for range 16 {
			if err := add(Public, routePublic, ""); err != nil {
				return pools, err
			}
		}
	}
	return pools, nil
}

// fromTokens builds the pools from raw tokens whose claims it reads without verifying them.
func (b *builder) fromTokens(tokens []string, mix Mix) (pools [numClasses][]*preEncoded, err error) {
	add := func(c Class, url, tok string) error {
		r, err := b.request(url, tok)
		if err == nil {
			pools[c] = append(pools[c], r)
		}
		return err
	}
	for i, tok := range tokens {
		if mix[Valid] > 0 {
			urls := []string{routeAccounts, paymentURL(i)}
			if acc := firstAccount(tok); acc != "" {
				urls = append(urls, transactionsURL(acc))
			}
			for _, url := range urls {
				if err := add(Valid, url, tok); err != nil {
					return pools, err
				}
			}
		}
		if mix[Forbidden] > 0 {
			if err := add(Forbidden, transactionsURL("acc-loadtest-not-granted"), tok); err != nil {
				return pools, err
			}
		}
		if mix[Invalid] > 0 {
			bad := tamper(tok)
			if i%2 == 1 {
				if bad, err = b.resign(tok); err != nil {
					return pools, err
				}
			}
			if err := add(Invalid, routeAccounts, bad); err != nil {
				return pools, err
			}
		}
	}
	if mix[Public] > 0 {
		for range 16 {
			if err := add(Public, routePublic, ""); err != nil {
				return pools, err
			}
		}
	}
	return pools, nil
}

// tamper changes one character in the middle of the signature: the token still parses, and its signature no
// longer verifies.
func tamper(tok string) string {
	dot := strings.LastIndexByte(tok, '.')
	i := dot + (len(tok)-dot)/2
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

// resign signs tok's payload again with a key the issuer never published, under an unknown kid.
func (b *builder) resign(tok string) (string, error) {
	first := strings.IndexByte(tok, '.')
	last := strings.LastIndexByte(tok, '.')
	if first < 0 || last <= first {
		return "", errors.New("loadtest: token is not a compact JWS")
	}
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","kid":"` + unknownKID + `","typ":"at+jwt"}`))
	signing := header + "." + tok[first+1:last]
	sig, err := jwt.SigningMethodES256.Sign(signing, b.stranger)
	if err != nil {
		return "", fmt.Errorf("loadtest: %w", err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// firstAccount returns the first entry of an accounts claim in tok's payload, read without verification, or "".
func firstAccount(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Accounts []string `json:"accounts"`
	}
	if json.Unmarshal(payload, &claims) != nil || len(claims.Accounts) == 0 {
		return ""
	}
	return claims.Accounts[0]
}

// interleave lays the pools out in the proportions of mix, spread evenly (smooth weighted round-robin over the
// weights divided by their greatest common divisor), each class cycling through its own pool. The sequence is
// long enough for every pooled request to appear at least once.
func interleave(mix Mix, pools [numClasses][]*preEncoded) []entry {
	g := 0
	for _, w := range mix {
		g = gcd(g, w)
	}
	var weights [numClasses]int
	period, rounds := 0, 1
	for c, w := range mix {
		weights[c] = w / g
		period += weights[c]
		if weights[c] > 0 {
			rounds = max(rounds, (len(pools[c])+weights[c]-1)/weights[c])
		}
	}
	pattern := make([]Class, 0, period)
	var current [numClasses]int
	for range period {
		best := Class(-1)
		for c := range numClasses {
			if weights[c] == 0 {
				continue
			}
			current[c] += weights[c]
			if best < 0 || current[c] > current[best] {
				best = c
			}
		}
		current[best] -= period
		pattern = append(pattern, best)
	}
	seq := make([]entry, 0, period*rounds)
	var next [numClasses]int
	for range rounds {
		for _, c := range pattern {
			seq = append(seq, entry{req: pools[c][next[c]%len(pools[c])], class: c})
			next[c]++
		}
	}
	return seq
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
