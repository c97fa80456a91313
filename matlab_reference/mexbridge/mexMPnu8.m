function varargout = mexMPnu8(varargin)
% Octave stand-in for Kilosort2's mexMPnu8 mex: pykilosort's kernel through mex_bridge.
varargout = cell(1, max(nargout, 1));
[varargout{:}] = mex_bridge('mexMPnu8', nargout, varargin{:});
end
