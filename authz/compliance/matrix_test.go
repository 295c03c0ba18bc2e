package compliance

import "testing"

func TestCompareIDs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		a, b string
		want int
	}{
		{"numbers compare by value, not by text", "7.2.1", "7.10", -1},
		{"a shorter id sorts before its extension", "7.2", "7.2.1", -1},
		{"letters before numbers compare as text", "CC6.2", "CC6.10", -1},
		{"parenthesised parts compare naturally", "5(1)(c)", "5(1)(f)", -1},
		{"longer numbers are larger", "314.4(c)(1)", "1798.100(c)", -1},
		{"equal ids", "CC6.1", "CC6.1", 0},
		{"leading zeros do not change the value, only break ties", "7.02", "7.2", -1},
		{"reversed", "7.10", "7.2.1", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := compareIDs(tc.a, tc.b); got != tc.want {
				t.Errorf("compareIDs(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
			}
		})
	}
}

// FuzzCompareIDs checks that compareIDs is a total order, which the matrix
// needs to come out the same on every run.
func FuzzCompareIDs(f *testing.F) {
	for _, seed := range [][3]string{
		{"7.2.1", "7.10", "7.2"},
		{"CC6.1", "CC6.01", "CC06.1"},
		{"5(1)(c)", "314.4(c)(1)", "1798.100(c)"},
		{"", "0", "00"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, a, b, c string) {
		ab, ba := compareIDs(a, b), compareIDs(b, a)
		if ab != -ba {
			t.Fatalf("compareIDs(%q, %q) = %d but compareIDs(%q, %q) = %d", a, b, ab, b, a, ba)
		}
		if (ab == 0) != (a == b) {
			t.Fatalf("compareIDs(%q, %q) = %d", a, b, ab)
		}
		if ab < 0 && compareIDs(b, c) < 0 && compareIDs(a, c) >= 0 {
			t.Fatalf("not transitive: %q < %q < %q but not %q < %q", a, b, c, a, c)
		}
	})
}
