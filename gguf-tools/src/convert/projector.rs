//! A projector whose activation is the identity (`projector_hidden_act = "linear"`):
//! `linear_2(linear_1(x))` is one linear map. llama.cpp's `linear` projector (and ours) runs
//! one matrix, so the two are folded into it exactly, in f64, rather than dropping `linear_2`.

/// `W = W2 · W1` (`[n_out, n_in]`) and `b = W2 · b1 + b2` (`[n_out]`), from `W1` `[hidden,
/// n_in]`, `b1` `[hidden]`, `W2` `[n_out, hidden]`, `b2` `[n_out]`, all row-major. Sums in f64,
/// each result rounded once to f32. When `W2` is the identity and `b2` zero the result is
/// `W1`, `b1` bit for bit.
pub fn fold_linear(
    w1: &[f32],
    b1: &[f32],
    w2: &[f32],
    b2: &[f32],
    n_in: usize,
    hidden: usize,
    n_out: usize,
) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(w1.len(), hidden * n_in);
    assert_eq!(b1.len(), hidden);
    assert_eq!(w2.len(), n_out * hidden);
    assert_eq!(b2.len(), n_out);
    let identity = n_out == hidden
        && b2.iter().all(|&x| x == 0.0)
        && w2
            .chunks(hidden)
            .enumerate()
            .all(|(r, row)| row.iter().enumerate().all(|(c, &x)| x == f32::from(r == c)));
    if identity {
        return (w1.to_vec(), b1.to_vec());
    }
    let mut w = vec![0f32; n_out * n_in];
    let mut acc = vec![0f64; n_in];
    for (o, row2) in w2.chunks(hidden).enumerate() {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (h, &c) in row2.iter().enumerate() {
            if c == 0.0 {
                continue;
            }
            let c = f64::from(c);
            for (a, &x) in acc.iter_mut().zip(&w1[h * n_in..(h + 1) * n_in]) {
                *a += c * f64::from(x);
            }
        }
        for (dst, &a) in w[o * n_in..(o + 1) * n_in].iter_mut().zip(&acc) {
            *dst = a as f32;
        }
    }
    let b = w2
        .chunks(hidden)
        .zip(b2)
        .map(|(row2, &bias)| {
            let s: f64 = row2
                .iter()
                .zip(b1)
                .map(|(&c, &x)| f64::from(c) * f64::from(x))
                .sum();
            (s + f64::from(bias)) as f32
        })
        .collect();
    (w, b)
}

#[cfg(test)]
mod tests {
    use super::fold_linear;

    #[test]
    fn folding_equals_applying_both() {
        let (n_in, hidden, n_out) = (3, 2, 2);
        let w1 = [1.0, 2.0, 3.0, -1.0, 0.5, 0.25];
        let b1 = [0.1, -0.2];
        let w2 = [2.0, 1.0, 0.0, -3.0];
        let b2 = [0.5, 1.0];
        let (w, b) = fold_linear(&w1, &b1, &w2, &b2, n_in, hidden, n_out);
        let x = [0.3f64, -0.7, 1.1];
        for o in 0..n_out {
            let mut want = b2[o] as f64;
            for h in 0..hidden {
                let mut y = b1[h] as f64;
                for i in 0..n_in {
                    y += w1[h * n_in + i] as f64 * x[i];
                }
                want += w2[o * hidden + h] as f64 * y;
            }
            let got: f64 = b[o] as f64
                + (0..n_in)
                    .map(|i| w[o * n_in + i] as f64 * x[i])
                    .sum::<f64>();
            assert!((got - want).abs() < 1e-6, "{got} {want}");
        }
    }

    #[test]
    fn an_identity_second_linear_leaves_the_first_bit_for_bit() {
        let w1 = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6];
        let b1 = [0.7f32, 0.8];
        let (w, b) = fold_linear(&w1, &b1, &[1.0, 0.0, 0.0, 1.0], &[0.0, 0.0], 3, 2, 2);
        assert_eq!((w.as_slice(), b.as_slice()), (&w1[..], &b1[..]));
    }
}
