function ks25_shift_reference(ks_path, input_mat, out_dir)
% Kilosort 2.5.2's registration of a proc file: shift_batch_on_disk2 (and kernel2D) over every
% batch, exactly as datashift2's loop calls it, on a proc file our pipeline wrote
% (shift_input.py), with seeded drifts: rigid (one block) and non-rigid (9 block centres, the
% per-channel drifts interpolated by interp1(..., 'makima', 'extrap')).
%   octave --no-gui --eval "ks25_shift_reference('/path/to/Kilosort-v2.5.2', 'in.mat', 'data')"
% Writes ks25_shift.mat: for each case the shifted proc file (int16, (NT*Nbatch, Nchan)), the
% per-channel drifts shift_batch_on_disk2 returns, and the kriging matrix M of every batch.
here = fileparts(mfilename('fullpath'));
addpath(fullfile(here, 'shims'));
warning('off', 'Octave:shadowed-function');
addpath(fullfile(here, 'shims_makima'));        % 'makima' for interp1; this driver only
addpath(fullfile(ks_path, 'preProcess'));
in = load(input_mat);
work = tempname(); mkdir(work);
out = struct();
[out.proc_rigid, out.shifts_rigid, out.M_rigid] = register(in, in.dshift_rigid, in.yblk_rigid, ...
                                                           fullfile(work, 'rigid.dat'));
[out.proc_nonrigid, out.shifts_nonrigid, out.M_nonrigid] = register(in, in.dshift, in.yblk, ...
                                                                    fullfile(work, 'nonrigid.dat'));
out.version = version();
save('-v7', fullfile(out_dir, 'ks25_shift.mat'), '-struct', 'out');
confirm_recursive_rmdir(false); rmdir(work, 's');
fprintf('ks25_shift_reference: done (%s)\n', version());
end

function [proc, shifts, M] = register(in, dshift, yblk, fproc)
% a copy of the proc file, registered in place by the original, batch after batch
NT = double(in.NT); Nbatch = double(in.Nbatch); Nchan = size(in.proc, 2);
fid = fopen(fproc, 'w');
fwrite(fid, in.proc', 'int16');                 % channel fastest, as KS2.5 writes it
fclose(fid);
rez = struct();
rez.ops = struct('NT', NT, 'Nchan', Nchan, 'ntbuff', double(in.ntbuff), 'fproc', fproc);
rez.temp.Nbatch = Nbatch;
rez.xc = double(in.xc(:)); rez.yc = double(in.yc(:));
sig = double(in.sig);
shifts = zeros(Nchan, Nbatch);
M = zeros(Nchan, Nchan, Nbatch);
% datashift2.m: dprev = gpuArray.zeros(ops.ntbuff, ops.Nchan, 'single'); then the loop
dprev = gpuArray.zeros(rez.ops.ntbuff, rez.ops.Nchan, 'single');
for ibatch = 1:Nbatch
    [dprev, ~, ~, s] = shift_batch_on_disk2(rez, ibatch, dshift(ibatch, :), yblk, sig, dprev);
    shifts(:, ibatch) = s;
    M(:, :, ibatch) = kriging_matrix(rez, s, sig);
end
fid = fopen(fproc, 'r');
proc = fread(fid, [Nchan NT * Nbatch], '*int16')';
fclose(fid);
check_matrix(in, proc, M, rez);
end

function M = kriging_matrix(rez, shifts, sig)
% shift_batch_on_disk2's lines for M, which it does not return, with the original kernel2D
xp = cat(2, rez.xc, rez.yc);
Kxx = kernel2D(xp, xp, sig);
yp = xp;
yp(:, 2) = yp(:, 2) - shifts;
Kyx = kernel2D(yp, xp, sig);
M = Kyx /(Kxx + .01 * eye(size(Kxx,1)));
end

function check_matrix(in, proc, M, rez)
% the saved M must be the one the original used: redo batch 2 (full batch, a real dprev) from
% its input and batch 1's tail with these M and compare with the original's output, bit for bit
NT = rez.ops.NT; ntb = rez.ops.ntbuff;
d1 = single(in.proc(1:NT + ntb, :)) * M(:, :, 1)';
w = linspace(0, 1, ntb)';
d1(1:ntb, :) = w .* d1(1:ntb, :) + (1 - w) .* zeros(ntb, size(M, 1), 'single');
dprev = d1(NT + (1:ntb), :);
d2 = single(in.proc(NT + (1:NT + ntb), :)) * M(:, :, 2)';
d2(1:ntb, :) = w .* d2(1:ntb, :) + (1 - w) .* dprev;
if ~isequal(int16(d2(1:NT, :)), proc(NT + (1:NT), :))
    error('ks25_shift_reference: the recomputed M does not reproduce the original''s batch 2');
end
end
