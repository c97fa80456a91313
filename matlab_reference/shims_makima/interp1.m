function vq = interp1(varargin)
% Octave 7 stand-in for MATLAB's interp1(x, v, xq, 'makima', 'extrap'), which Octave lacks.
% Only ks25_shift_reference.m puts this folder on the path (shift_batch_on_disk2 interpolates
% the per-block drifts to the channels with it); every other call goes to Octave's own interp1.
%
% Written from MathWorks' documented definition of 'makima' (modified Akima, Ionita 2019):
%   delta_i = (v_{i+1} - v_i) / (x_{i+1} - x_i), i = 1..n-1, extended at each end by two slopes
%   of Akima's quadratic end rule: delta_0 = 2 delta_1 - delta_2, delta_{-1} = 2 delta_0 - delta_1
%   (and delta_n = 2 delta_{n-1} - delta_{n-2}, delta_{n+1} = 2 delta_n - delta_{n-1});
%   derivative at x_i: d_i = (w1 delta_{i-1} + w2 delta_i) / (w1 + w2) with
%   w1 = |delta_{i+1} - delta_i| + |delta_{i+1} + delta_i| / 2,
%   w2 = |delta_{i-1} - delta_{i-2}| + |delta_{i-1} + delta_{i-2}| / 2,
%   and d_i = 0 where w1 + w2 = 0 (then all four slopes are 0);
%   between knots the cubic Hermite polynomial through (x_i, v_i, d_i) and (x_{i+1}, v_{i+1},
%   d_{i+1}); 'extrap' evaluates the first and last pieces outside [x_1, x_n].
%   Two points: the straight line through them (MATLAB's makima falls back to linear).
persistent octave_interp1
is_makima = numel(varargin) >= 4 && ischar(varargin{4}) && strcmpi(varargin{4}, 'makima');
if ~is_makima
    if isempty(octave_interp1)
        octave_interp1 = core_handle();
    end
    vq = octave_interp1(varargin{:});
    return
end
if numel(varargin) ~= 5 || ~ischar(varargin{5}) || ~strcmpi(varargin{5}, 'extrap')
    error('interp1 shim: only interp1(x, v, xq, ''makima'', ''extrap'') is implemented');
end
[x, v, xq] = deal(double(varargin{1}(:)), double(varargin{2}(:)), double(varargin{3}));
if numel(x) ~= numel(v) || numel(x) < 2 || any(diff(x) <= 0)
    error('interp1 shim: x must be strictly increasing with as many points as v (>= 2)');
end
vq = makima_eval(x, v, xq(:));
vq = reshape(vq, size(xq));   % a vector v: the result takes xq's shape, as in MATLAB
end

function h = core_handle()
% A handle to Octave's own interp1: taken while this folder is off the path, it stays bound to
% the core file (Octave resolves a simple handle when it is created).
here = fileparts(mfilename('fullpath'));
rmpath(here);
h = @interp1;
addpath(here);
end

function vq = makima_eval(x, v, xq)
n = numel(x);
hx = diff(x);
delta = diff(v) ./ hx;                          % delta_1 .. delta_{n-1}
if n == 2
    d = [delta; delta];                         % linear
else
    d = knot_slopes(delta);
end
% interval k holds xq in [x_k, x_{k+1}); below x_1 the first, from x_{n-1} on the last
k = ones(size(xq));
for j = 2:n-1
    k(xq >= x(j)) = j;
end
t = (xq - x(k)) ./ hx(k);                       % 0..1 inside, outside for 'extrap'
h00 = (1 + 2 * t) .* (1 - t).^2;                % cubic Hermite basis
h10 = t .* (1 - t).^2;
h01 = t.^2 .* (3 - 2 * t);
h11 = t.^2 .* (t - 1);
vq = h00 .* v(k) + h10 .* hx(k) .* d(k) + h01 .* v(k + 1) + h11 .* hx(k) .* d(k + 1);
end

function d = knot_slopes(delta)
% derivatives at the n knots from the n-1 interval slopes (n >= 3)
m = numel(delta);
d0 = 2 * delta(1) - delta(2);
dm1 = 2 * d0 - delta(1);
dn = 2 * delta(m) - delta(m - 1);
dn1 = 2 * dn - delta(m);
e = [dm1; d0; delta; dn; dn1];                  % e(i + 2) = delta_i, i = -1 .. n+1
d = zeros(m + 1, 1);
for i = 1:m + 1
    a = e(i);        % delta_{i-2}
    b = e(i + 1);    % delta_{i-1}
    c = e(i + 2);    % delta_i
    f = e(i + 3);    % delta_{i+1}
    w1 = abs(f - c) + abs(f + c) / 2;
    w2 = abs(b - a) + abs(b + a) / 2;
    if w1 + w2 > 0
        d(i) = (w1 * b + w2 * c) / (w1 + w2);
    end
end
end
